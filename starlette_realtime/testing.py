"""Testing your endpoints in-process: no server, no sockets.

:class:`RealtimeTester` drives a :class:`~starlette_realtime.RealtimeRouter`
through its ASGI interface, like Channels' ``WebsocketCommunicator`` and in the
spirit of Phoenix's ``ChannelTest``::

    async with RealtimeTester(realtime) as tester:
        alice = await tester.connect("/chat", auth={"token": token})
        assert await alice.call("join", "lobby") == ["lobby"]
        await alice.emit("say", {"room": "lobby", "text": "hi"})
        tester.assert_sent("lobby", "said", {"room": "lobby", "text": "hi"}, namespace="/chat")
        await bob.assert_pushed("said", {"room": "lobby", "text": "hi"})
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from . import status
from .backends.base import Publication
from .codec import Codec, JsonCodec, MsgpackCodec
from .exceptions import AckError, CallTimeout
from .frames import Ack, Connect, Connected, ConnectError, Disconnect, ErrorInfo, Event, Frame, Ping, Pong
from .routing import RealtimeRouter

_MISSING: Any = object()


class _Recorder:
    """Wraps the router's backend to record every publication."""

    def __init__(self, backend: Any, log: list[Publication]) -> None:
        self._backend = backend
        self._log = log

    async def publish(self, pub: Publication) -> Publication:
        out: Publication = await self._backend.publish(pub)
        self._log.append(out)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


class TestConnection:
    """One in-process client connection to one namespace."""

    __test__ = False  # not a pytest test class

    def __init__(self, tester: RealtimeTester, namespace: str, codec: Codec) -> None:
        self.tester = tester
        self.namespace = namespace
        self.codec = codec
        self._in: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.pushed: list[tuple[str, Any]] = []
        self.frames: list[Frame] = []
        self.sid: str | None = None
        self.session: str | None = None
        self.recovered = False
        self.connect_error: ConnectError | None = None
        self.close_code: int | None = None
        self.handlers: dict[str, Callable[[Any], Any]] = {}
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._changed = asyncio.Event()

    # ASGI side --------------------------------------------------------------------

    async def _receive(self) -> dict[str, Any]:
        return await self._in.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            raw = message.get("bytes") or message["text"].encode()
            await self._on_frame(self.codec.decode_any(raw))
        elif kind == "websocket.close":
            self.close_code = message.get("code", 1000)
        self._changed.set()

    async def _on_frame(self, frame: Frame) -> None:
        self.frames.append(frame)
        if isinstance(frame, Connected):
            self.sid, self.session, self.recovered = frame.sid, frame.session, frame.recovered
        elif isinstance(frame, ConnectError):
            self.connect_error = frame
        elif isinstance(frame, Ack):
            fut = self._acks.pop(frame.id, None)
            if fut is not None and not fut.done():
                if frame.error is not None:
                    fut.set_exception(AckError(frame.error.code, frame.error.message))
                else:
                    fut.set_result(self._decode(frame.data))
        elif isinstance(frame, Event):
            data = self._decode(frame.data)
            if frame.id is not None:
                handler = self.handlers.get(frame.event)
                if handler is None:
                    reply = Ack(self.namespace, frame.id, self.codec.null, ErrorInfo(status.UNKNOWN_EVENT))
                else:
                    reply = Ack(self.namespace, frame.id, self.codec.encode_payload(handler(data)))
                self._put(reply)
            else:
                self.pushed.append((frame.event, data))
        elif isinstance(frame, Ping):
            self._put(Pong())

    def _decode(self, raw: msgspec.Raw) -> Any:
        return msgspec.msgpack.decode(raw) if self.codec.binary else msgspec.json.decode(raw)

    def _put(self, frame: Frame) -> None:
        raw = self.codec.encode(frame)
        if self.codec.binary:
            self._in.put_nowait({"type": "websocket.receive", "bytes": raw})
        else:
            self._in.put_nowait({"type": "websocket.receive", "text": raw.decode()})

    # Test API ---------------------------------------------------------------------

    async def emit(self, event: str, data: Any = None) -> None:
        """Send an event without waiting for anything."""
        self._put(Event(self.namespace, event, self.codec.encode_payload(data)))
        await asyncio.sleep(0)

    async def call(self, event: str, data: Any = None, *, timeout: float = 2.0) -> Any:
        """Send an event and return its ack.

        Raises:
            AckError: the server answered with an error.
            CallTimeout: no ack in time.
        """
        self._next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[self._next_id] = fut
        self._put(Event(self.namespace, event, self.codec.encode_payload(data), self._next_id))
        try:
            with anyio.fail_after(timeout):
                return await fut
        except TimeoutError:
            raise CallTimeout(f"no ack for {event!r} within {timeout} s") from None

    async def wait_for(self, predicate: Callable[[], bool], *, timeout: float = 2.0) -> None:
        """Wait until ``predicate()`` is true."""
        with anyio.fail_after(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def assert_pushed(self, event: str, data: Any = _MISSING, *, timeout: float = 1.0) -> Any:
        """Wait until the server pushed ``event`` (with ``data``, when given) and return its data."""
        def found() -> bool:
            return any(e == event and (data is _MISSING or d == data) for e, d in self.pushed)

        try:
            await self.wait_for(found, timeout=timeout)
        except TimeoutError:
            raise AssertionError(
                f"{event!r} {'' if data is _MISSING else f'with {data!r} '}was not pushed; got {self.pushed!r}"
            ) from None
        return next(d for e, d in self.pushed if e == event and (data is _MISSING or d == data))

    def assert_not_pushed(self, event: str) -> None:
        """Fail if ``event`` was pushed to this connection."""
        assert all(e != event for e, _ in self.pushed), f"{event!r} was pushed: {self.pushed!r}"

    async def disconnect(self) -> None:
        """Close the namespace (the client's DISCONNECT frame)."""
        self._put(Disconnect(self.namespace))
        await asyncio.sleep(0)

    async def close(self, code: int = 1000) -> None:
        """Close the WebSocket from the client side."""
        self._in.put_nowait({"type": "websocket.disconnect", "code": code})
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"TestConnection(namespace={self.namespace!r}, sid={self.sid!r}, pushed={len(self.pushed)})"


class RealtimeTester:
    """Runs a router in-process and opens test connections to it.

    Args:
        router: the router under test (started and stopped by the tester).
    """

    __test__ = False

    def __init__(self, router: RealtimeRouter) -> None:
        self.router = router
        self.published: list[Publication] = []
        self._stack = contextlib.AsyncExitStack()
        self._tg: anyio.abc.TaskGroup | None = None
        self._connections: list[TestConnection] = []

    async def __aenter__(self) -> RealtimeTester:
        await self._stack.__aenter__()
        await self._stack.enter_async_context(self.router)
        self.router.publisher.backend = _Recorder(self.router.publisher.backend, self.published)  # type: ignore[assignment]
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self._connections:
            if conn.close_code is None:
                await conn.close()
        await anyio.sleep(0.01)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        recorder = self.router.publisher.backend
        if isinstance(recorder, _Recorder):
            self.router.publisher.backend = recorder._backend
        await self._stack.__aexit__(None, None, None)

    async def connect(
        self,
        namespace: str = "/",
        *,
        auth: Any = None,
        encoding: str = "json",
        headers: list[tuple[bytes, bytes]] | None = None,
        session: str | None = None,
        expect_error: bool = False,
        timeout: float = 2.0,
    ) -> TestConnection:
        """Open a WebSocket and connect to ``namespace``.

        Raises:
            AssertionError: the namespace refused (unless ``expect_error``).
        """
        assert self._tg is not None, "use RealtimeTester as an async context manager"
        codec: Codec = MsgpackCodec() if encoding == "msgpack" else JsonCodec()
        conn = TestConnection(self, namespace, codec)
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "path": "/",
            "root_path": "",
            "query_string": b"",
            "headers": headers or [],
            "subprotocols": [codec.subprotocol],
            "client": ("127.0.0.1", 50000 + len(self._connections)),
            "server": ("testserver", 80),
            "extensions": {},
        }
        conn._in.put_nowait({"type": "websocket.connect"})
        self._tg.start_soon(self.router, scope, conn._receive, conn._send)
        self._connections.append(conn)
        conn._put(Connect(namespace, codec.encode_payload(auth), session))
        await conn.wait_for(
            lambda: conn.sid is not None or conn.connect_error is not None or conn.close_code is not None,
            timeout=timeout,
        )
        if not expect_error and conn.sid is None:
            raise AssertionError(f"connect to {namespace!r} failed: {conn.connect_error or conn.close_code}")
        return conn

    def sent_to(self, room: str, *, namespace: str) -> list[tuple[str, Any]]:
        """Every (event, data) published to ``room`` in ``namespace`` so far."""
        return [
            (p.event, msgspec.json.decode(p.data)) for p in self.published if p.ns == namespace and p.room == room
        ]

    def assert_sent(self, room: str, event: str, data: Any = _MISSING, *, namespace: str) -> None:
        """Fail unless ``event`` (with ``data``, when given) was published to ``room``."""
        sent = self.sent_to(room, namespace=namespace)
        assert any(e == event and (data is _MISSING or d == data) for e, d in sent), (
            f"{event!r} was not sent to {room!r}; sent: {sent!r}"
        )

    def __repr__(self) -> str:
        return f"RealtimeTester(router={self.router!r}, connections={len(self._connections)})"


__all__ = ["RealtimeTester", "TestConnection"]
