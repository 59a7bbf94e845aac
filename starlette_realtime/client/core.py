"""The client's core: its namespaces, handlers and wire counts, and what it does with each frame.

``RealtimeClient`` is the public face over it, and :class:`~.loop.ConnectionLoop` brings it
the sockets: the core gets their messages and sends through the loop, never opening a socket
itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from .. import status
from ..codec import Codec
from ..exceptions import ProtocolError
from ..frames import Ack, Connected, ConnectError, Disconnect, Error, ErrorInfo, Event, Frame, Hello, Ping, Pong
from .errors import ClientClosed, ConnectRefused, NamespaceNotOpen
from .handlers import EventMeta, Handlers
from .loop import ClientState, ConnectionLoop
from .namespace import NamespaceState, resolve_auth
from .stats import WireStats

logger = logging.getLogger(__name__)


class ClientCore:
    """The state a client keeps across its sockets, and its answers to the server's frames.

    Args:
        codec: the wire encoding.
        namespaces: the state of each namespace the client opens, by name.
    """

    def __init__(self, codec: Codec, namespaces: dict[str, NamespaceState]) -> None:
        self.codec = codec
        module: Any = msgspec.msgpack if codec.binary else msgspec.json
        self.decode: Callable[[bytes], Any] = module.Decoder().decode
        self.ns = namespaces
        self.handlers = Handlers()
        self.wire_stats = WireStats()
        self.state_listeners: list[Callable[[ClientState], Any]] = []
        self.frame_listeners: list[Callable[[Frame], Any]] = []
        self.state = ClientState.CLOSED
        self.ready = asyncio.Event()
        self.failure: BaseException | None = None
        self.max_message_size = 1 << 20
        self.loop: ConnectionLoop | None = None

    def attach(self, loop: ConnectionLoop) -> None:
        """Send through ``loop`` from now on."""
        self.loop = loop

    def namespace(self, name: str, *, opened_only: bool = True) -> NamespaceState:
        ns = self.ns.get(name)
        if ns is None:
            raise NamespaceNotOpen(name, self.ns)
        if opened_only and not ns.active:
            raise NamespaceNotOpen(name, self.ns, closed=True)
        return ns

    async def send(self, frame: Any) -> None:
        raw = self.codec.encode(frame)
        if len(raw) > self.max_message_size:
            raise ValueError(f"message of {len(raw)} bytes exceeds the server's max_message_size")
        await self._loop().send(raw if self.codec.binary else raw.decode())

    async def send_pending(self, ns: NamespaceState, ack_id: int) -> None:
        item = ns.outgoing.pending.get(ack_id)
        if item is None:
            return
        item.sent = True
        await self.send(Event(ns.name, item.event, self.codec.encode_payload(item.data), item.id))

    # The connection loop's callbacks ---------------------------------------------------------

    def set_state(self, state: ClientState) -> None:
        if state is self.state:
            return
        self.state = state
        for listener in self.state_listeners:
            try:
                listener(state)
            except Exception:
                logger.exception("state listener failed")

    async def on_open(self) -> None:
        for ns in self.ns.values():
            if ns.active:
                ns.token_retries = 0
                await self.send_connect(ns)

    async def send_connect(self, ns: NamespaceState) -> None:
        try:
            auth = await resolve_auth(ns.auth)
        except Exception:
            # A token service that is down now may be up later: retry with backoff, as after a drop.
            logger.exception("the auth provider of %s failed: reconnecting later", ns.name)
            await self._loop().close_for_retry()
            return
        await self.send(ns.connect_frame(self.codec.encode_payload(auth)))

    def lost(self, code: int | None) -> None:
        self.ready.clear()
        for ns in self.ns.values():
            if ns.connected:
                ns.connected = False
                self.local(ns.name, "disconnect", {"reason": "transport closed", "code": code})

    def on_closed(self, code: int | None) -> None:
        self.lost(code)

    def fail(self, exc: BaseException) -> None:
        self.failure = exc
        self.set_state(ClientState.CLOSED)
        for ns in self.ns.values():
            ns.fail_pending(exc)

    def check_ready(self) -> None:
        active = [ns for ns in self.ns.values() if ns.active]
        if active and all(ns.connected for ns in active):
            self.ready.set()
            self.set_state(ClientState.CONNECTED)

    def local(self, namespace: str, event: str, data: Any) -> None:
        self.handlers.notify(EventMeta(namespace, event), data)

    # Incoming frames -------------------------------------------------------------------------

    async def on_message(self, raw: bytes) -> None:
        try:
            frame = self.codec.decode_any(raw)
        except ProtocolError as exc:  # the server never sends these: dropping one beats guessing
            logger.warning("dropped a frame from the server: %s", exc)
            return
        self.wire_stats.frames += 1
        for listener in self.frame_listeners:
            try:
                listener(frame)
            except Exception:
                logger.exception("frame listener failed")
        if type(frame) is Event:
            self.wire_stats.record_event(frame)
            await self._on_event(frame)
        elif type(frame) is Ack:
            self._on_ack(frame)
        elif type(frame) is Ping:
            await self.send(Pong())
        elif type(frame) is Connected:
            await self._on_connected(frame)
        elif type(frame) is ConnectError:
            await self._on_connect_error(frame)
        elif type(frame) is Hello:
            self._loop().silence = frame.ping_interval + frame.ping_timeout
            self.max_message_size = frame.max_message_size
        elif type(frame) is Disconnect:
            self._on_disconnect(frame)
        elif type(frame) is Error:
            logger.warning("server error frame: %s %s", frame.code, frame.message)
            for name in [frame.ns] if frame.ns is not None else list(self.ns):
                if name in self.ns:
                    self.local(name, "error", {"code": frame.code, "message": frame.message})

    async def _on_connected(self, frame: Connected) -> None:
        ns = self.ns.get(frame.ns)
        if ns is None or not ns.active:
            return
        ns.opened(frame)
        self._loop().mark_opened()
        info = {"sid": frame.sid, "recovered": frame.recovered, "recovery_failed": frame.recovery_failed}
        self.local(ns.name, "connect", info)
        if frame.recovery_failed:
            self.local(ns.name, "recovery_failed", {"sid": frame.sid})
        # Unacknowledged events go again with their ids (a call whose answer was lost gets it now),
        # oldest first. The namespace counts as connected only afterwards: an emit made meanwhile
        # (by a "connect" handler, another task) joins the queue behind them, never overtakes them.
        resent: set[int] = set()
        while batch := [item for item in ns.outgoing.to_send(time.monotonic()) if item.id not in resent]:
            for item in batch:
                resent.add(item.id)
                await self.send_pending(ns, item.id)
        ns.connected = True
        self.check_ready()

    async def _on_connect_error(self, frame: ConnectError) -> None:
        ns = self.ns.get(frame.ns)
        if ns is None or not ns.active:
            return
        info = {"code": frame.code, "message": frame.message, "retryable": frame.retryable}
        self.local(frame.ns, "connect_error", info)
        # Retries keep the session: nothing was restored yet, and it may still recover
        # (say the server's backend was down for a moment).
        if frame.code == status.INVALID_TOKEN and callable(ns.auth) and ns.token_retries < 2:
            ns.token_retries += 1
            await self.send_connect(ns)
            return
        if frame.retryable and (frame.code != status.INVALID_TOKEN or callable(ns.auth)):
            # The same input may work a bit later (a limit, a provider with a fresh token
            # by then): reconnect with backoff.  A fixed token that is invalid never will.
            await self._loop().close_for_retry()
            return
        ns.session = None
        raise ConnectRefused(frame.ns, frame.code, frame.message)

    def _on_disconnect(self, frame: Disconnect) -> None:
        ns = self.ns.get(frame.ns)
        if ns is None or not ns.active:
            return
        was_connected = ns.connected
        ns.closed_for_good(NamespaceNotOpen(ns.name, (), closed=True))
        if was_connected:
            self.local(frame.ns, "disconnect", {"reason": frame.reason, "code": None})
        if not any(n.active for n in self.ns.values()):
            raise ClientClosed("every namespace was closed by the server")
        self.check_ready()

    def _on_ack(self, frame: Ack) -> None:
        ns = self.ns.get(frame.ns)
        if ns is None:
            return
        item = ns.settle(frame, self.decode)
        if item is None or item.waiter is not None or frame.error is None:
            return
        # A plain emit has nobody waiting: an error must still not vanish silently.  ``duplicate``
        # says it was handled already, which is all an emit asks for.
        if frame.error.code == status.DUPLICATE:
            logger.debug("emit %r on %s: handled already (duplicate)", item.event, frame.ns)
            return
        logger.warning("emit %r on %s was refused: %s %s", item.event, frame.ns, frame.error.code, frame.error.message)
        self.local(frame.ns, "error", {"event": item.event, "code": frame.error.code, "message": frame.error.message})

    async def _on_event(self, frame: Event) -> None:
        ns = self.ns.get(frame.ns)
        if ns is None or not ns.active or not ns.accept(frame):
            return
        data = self.decode(frame.data)
        if frame.event == "$resync" and isinstance(data, dict):
            ns.positions.reset(data.get("room"))
        meta = EventMeta(frame.ns, frame.event, frame.room, frame.epoch, frame.offset)
        if frame.id is None:
            self.handlers.notify(meta, data)
            return
        try:
            found, result = await self.handlers.answer(meta, data)
        except Exception:
            logger.exception("handler for server call %r failed", frame.event)
            await self.send(Ack(frame.ns, frame.id, self.codec.null, _error(status.INTERNAL_ERROR)))
            return
        if not found:
            await self.send(Ack(frame.ns, frame.id, self.codec.null, _error(status.UNKNOWN_EVENT)))
            return
        await self.send(Ack(frame.ns, frame.id, self.codec.encode_payload(result)))


    def _loop(self) -> ConnectionLoop:
        assert self.loop is not None, "ClientCore.attach() was not called"
        return self.loop

    def __repr__(self) -> str:
        return f"ClientCore(state={self.state.value}, namespaces={sorted(self.ns)!r})"


def _error(code: str) -> ErrorInfo:
    return ErrorInfo(code, code)
