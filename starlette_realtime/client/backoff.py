"""Reconnection delays: exponential backoff with jitter, as an injectable generator."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator


def backoff(
    *,
    first: float = 1.0,
    maximum: float = 30.0,
    factor: float = 2.0,
    randomization: float = 0.5,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Yield reconnection delays forever.

    The n-th delay is ``min(maximum, first * factor**n)``, spread by up to
    ``randomization`` either way (``0.5`` gives 50 % to 150 %), so that clients
    dropped together do not come back together.

    Args:
        first: the first delay, in seconds.
        maximum: the largest delay before jitter.
        factor: growth per attempt.
        randomization: the jitter fraction, 0 to 1.
        rand: a source of floats in [0, 1), injectable for tests.
    """
    delay = first
    while True:
        spread = delay * randomization
        yield max(0.0, delay - spread + 2 * spread * rand())
        delay = min(maximum, delay * factor)
