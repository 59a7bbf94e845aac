"""Development mode's check of emits against the events each endpoint declares (``@emits``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .model import declared_emits

if TYPE_CHECKING:
    from ..endpoint import RealtimeEndpoint

logger = logging.getLogger("starlette_realtime.contract")


class UndeclaredEmits:
    """Reports, once per (namespace, event), an emit that its endpoint does not declare.

    Only endpoints that declare some events are checked: an endpoint without ``@emits``
    has no contract for its server events, so anything it emits is its own business.
    The emit itself always goes out; this is a warning for development, not a refusal.

    Args:
        endpoints: the router's endpoint instances.
    """

    __slots__ = ("declared", "reported")

    def __init__(self, endpoints: Iterable[RealtimeEndpoint]) -> None:
        #: namespace -> the events its endpoint declares (only endpoints that declare some).
        self.declared: dict[str, frozenset[str]] = {}
        for endpoint in endpoints:
            events = declared_emits(type(endpoint))
            if events:
                self.declared[endpoint.namespace] = frozenset(events)
        #: (namespace, event) pairs reported so far.
        self.reported: set[tuple[str, str]] = set()

    def __call__(self, namespace: str, event: str) -> None:
        declared = self.declared.get(namespace)
        if declared is None or event in declared or (namespace, event) in self.reported:
            return
        self.reported.add((namespace, event))
        logger.warning(
            "namespace %r emitted %r, which its endpoint does not declare (declared: %s); "
            "add it to @emits so that the contract describes it",
            namespace, event, ", ".join(sorted(declared)),
        )
