"""The client's exceptions, under the library's one root, :class:`~starlette_realtime.exceptions.RealtimeError`."""

from __future__ import annotations

from collections.abc import Iterable

from ..exceptions import AckError, CallTimeout, RealtimeError


class AckTimeout(CallTimeout):
    """No acknowledgement arrived within the call's timeout (also a ``TimeoutError``)."""


class ConnectRefused(RealtimeError):
    """A namespace refused the connection for good (a CONNECT_ERROR that is not retryable).

    Attributes:
        namespace: the namespace that refused.
        code: the CONNECT_ERROR code (``AUTHENTICATION_REQUIRED``, ``REJECTED``, an application code...).
        message: the server's message.
    """

    def __init__(self, namespace: str, code: str, message: str) -> None:
        super().__init__(f"{namespace}: {code}: {message}")
        self.namespace = namespace
        self.code = code
        self.message = message


class ClientClosed(RealtimeError):
    """The client stopped for good (closed by the user or by a terminal close code).

    Attributes:
        code: the WebSocket close code that stopped it, or ``None``.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class NamespaceNotOpen(RealtimeError):
    """A namespace this client did not open (it is not in ``namespaces=``, or it was closed for good).

    Attributes:
        namespace: the namespace asked for.
    """

    def __init__(self, namespace: str, opened: Iterable[str], *, closed: bool = False) -> None:
        names = ", ".join(repr(n) for n in sorted(opened)) or "none"
        if closed:
            why = f"namespace {namespace!r} was closed (by the server, or by disconnect_namespace())"
        else:
            why = (
                f"namespace {namespace!r} is not open on this client (it opens {names}): list it in "
                f"RealtimeClient(namespaces=[...]) or pass namespace= to this method"
            )
        super().__init__(why)
        self.namespace = namespace


__all__ = ["AckError", "AckTimeout", "ClientClosed", "ConnectRefused", "NamespaceNotOpen"]
