"""One Engine.IO v4 session as a sans-I/O state machine.

An :class:`EngineSession` is fed what arrived (a polling GET or POST, a WebSocket
frame, the time) and tells the I/O layer what to do: the body to answer a
waiting GET with, the frames to write on the WebSocket, the messages received
for the application, and whether the session closed and how.  It never awaits,
reads no clock (every input carries ``now``) and does no I/O, in the spirit of
python-websockets' ``ServerProtocol``.

The rules, from the Engine.IO v4 description:

- polling: at most one GET waits at a time and at most one POST is in flight;
  a second one is answered 400 and closes the session;
- heartbeat: the server sends ``ping`` every ``ping_interval`` and closes the
  session when no ``pong`` comes back within ``ping_timeout``;
- upgrade: a WebSocket opened with the session id sends ``2probe`` and gets
  ``3probe``; a GET waiting meanwhile is released with ``noop``; ``5`` switches
  the session to the WebSocket, where everything still buffered is flushed;
  polling requests after that are refused by :func:`engineio.check_request`;
- a ``close`` packet from the client closes the session, a waiting GET gets
  ``noop``; a server-side close sends what is still buffered, then ``close``, to
  the next GET (the reference server drains its buffer before closing too);
- any malformed packet, and a payload over ``max_payload``, closes the session.
"""

from __future__ import annotations

import enum
import logging
from typing import Final

from .. import status
from ..exceptions import ProtocolError
from . import engineio
from .engineio import Packet, PacketType

logger = logging.getLogger(__name__)


class Transport(str, enum.Enum):
    """The transport a session currently uses."""

    POLLING = "polling"
    WEBSOCKET = "websocket"


class Verdict(enum.IntEnum):
    """The HTTP status to answer a polling request with."""

    OK = 200
    BAD_REQUEST = 400
    TOO_LARGE = 413


#: Why a session closed: reason -> WebSocket close code (used when the session is on a WebSocket).
# A member read through its Enum class costs ~0.2 us on CPython 3.11 (EnumType.__getattr__, 12x a global):
# the per-packet paths read these module constants instead (the same objects).
_MESSAGE, _PING, _PONG = PacketType.MESSAGE, PacketType.PING, PacketType.PONG
_UPGRADE, _CLOSE, _NOOP = PacketType.UPGRADE, PacketType.CLOSE, PacketType.NOOP
_WEBSOCKET, _POLLING = Transport.WEBSOCKET, Transport.POLLING

CLOSE_CODES: Final = {
    "client close": status.WS_1000_NORMAL_CLOSURE,
    "server close": status.WS_1000_NORMAL_CLOSURE,
    "ping timeout": status.WS_4005_HEARTBEAT_TIMEOUT,
    "parse error": status.WS_4501_PROTOCOL_ERROR,
    "payload too large": status.WS_1009_MESSAGE_TOO_BIG,
    "duplicate request": status.WS_4501_PROTOCOL_ERROR,
    "transport error": status.WS_1006_ABNORMAL_CLOSURE,
}


class EngineSession:
    """The state of one Engine.IO session, on polling or WebSocket.

    Args:
        sid: the session id (sent in the ``open`` packet).
        transport: the transport the session starts on.
        now: the current time in seconds (any monotonic clock).
        ping_interval: seconds between server pings.
        ping_timeout: seconds the client has to answer a ping.
        max_payload: the largest POST body or WebSocket frame accepted, in bytes.
        upgrades: the transports offered for an upgrade (polling sessions only).
        heartbeat: whether this session sends pings itself; turn it off when a
            layer above drives the heartbeat through :meth:`send_ping`.
    """

    def __init__(
        self,
        sid: str,
        *,
        transport: Transport,
        now: float,
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        max_payload: int = 1_000_000,
        upgrades: tuple[str, ...] = ("websocket",),
        heartbeat: bool = True,
    ) -> None:
        self.sid = sid
        self.transport = transport
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_payload = max_payload
        self.heartbeat = heartbeat
        #: ``None`` while open; why the session closed otherwise (a key of :data:`CLOSE_CODES`).
        self.close_reason: str | None = None
        self._close_code: int | None = None
        self._buffer: list[str] = []  # polling-encoded packets waiting for a GET (or for the upgrade)
        self._ws_out: list[str | bytes] = []
        self._received: list[str | bytes] = []
        self._get_waiting = False
        self._post_active = False
        self._probing = False  # a WebSocket is attached and probing, not yet upgraded
        self._final: Packet | None = None  # the last packet a waiting GET gets after a close
        self._drain = False  # closed by the server: the buffer is still for the client
        self._next_ping: float | None = now + ping_interval if heartbeat else None
        self._pong_due: float | None = None
        offered = list(upgrades) if transport is Transport.POLLING else []
        hello = engineio.open_packet(
            sid, upgrades=offered, ping_interval=ping_interval, ping_timeout=ping_timeout, max_payload=max_payload
        )
        self._out(hello)

    @property
    def closed(self) -> bool:
        """Whether the session is closed (it may still owe a waiting GET its last answer)."""
        return self.close_reason is not None

    @property
    def owes_get(self) -> bool:
        """Whether a polling session the server closed still has its last body (ending with ``close``) for a GET.

        Only a server close is worth waiting for: after a protocol error or a
        ping timeout the session is dropped at once, as the reference server does.
        """
        return self._drain and self._final is not None and self.transport is Transport.POLLING

    @property
    def close_code(self) -> int:
        """The WebSocket close code: the one given to :meth:`close`, else the one of :attr:`close_reason`."""
        if self._close_code is not None:
            return self._close_code
        return CLOSE_CODES.get(self.close_reason or "", status.WS_1000_NORMAL_CLOSURE)

    # -- output -------------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        """Queue a ``message`` packet for the client (dropped once the session is closed)."""
        if self.close_reason is None:
            self._out(Packet(_MESSAGE, data))

    def send_payload(self, payload: str) -> None:
        """Queue packets already encoded as a polling payload (``\\x1e``-separated, binary as ``b`` + base64).

        This is how a wire's output reaches the client: appended to the next GET's
        body on polling, split into one frame per packet on a WebSocket.
        """
        if self.close_reason is not None or not payload:
            return
        if self.transport is _WEBSOCKET:
            self._ws_out.extend(engineio.payload_frames(payload))
        else:
            self._buffer.append(payload)

    def send_ping(self, now: float) -> None:
        """Send a ``ping`` now and expect a ``pong`` within ``ping_timeout``."""
        if self.close_reason is None:
            self._out(engineio.PING)
            self._pong_due = now + self.ping_timeout
            self._next_ping = None

    def close(self, reason: str = "server close", code: int | None = None) -> None:
        """Close the session from the server side; a polling client gets the rest and ``close`` on its next GET.

        Args:
            reason: why (a key of :data:`CLOSE_CODES` or any text).
            code: the WebSocket close code to use instead of the reason's.
        """
        if self.close_reason is None:
            self._close_code = code
        self._close(reason, engineio.CLOSE, drain=True)

    def _out(self, packet: Packet) -> None:
        if self.transport is _WEBSOCKET:
            self._ws_out.append(engineio.encode_ws(packet))
        else:
            self._buffer.append(engineio.encode_polling_packet(packet))

    def ws_frames(self) -> list[str | bytes]:
        """Take the frames to write on the WebSocket (``bytes`` for binary frames)."""
        frames, self._ws_out = self._ws_out, []
        return frames

    def messages(self) -> list[str | bytes]:
        """Take what the client sent for the layer above, in order.

        Text ``message`` packets come as their Engine.IO text (``"4..."``), binary
        ones as their bytes; a ``pong`` comes as ``"3"`` when the session does not
        run its own heartbeat.
        """
        got, self._received = self._received, []
        return got

    # -- clock --------------------------------------------------------------

    def deadline(self) -> float | None:
        """When :meth:`tick` next has something to do, or ``None``."""
        if self.close_reason is not None:
            return None
        if self._pong_due is not None:
            return self._pong_due
        return self._next_ping

    def tick(self, now: float) -> None:
        """Send the ping that is due, or close the session when a pong is overdue."""
        if self.close_reason is not None:
            return
        if self._pong_due is not None and now >= self._pong_due:
            self._close("ping timeout", engineio.CLOSE)
        elif self._next_ping is not None and now >= self._next_ping:
            self.send_ping(now)

    # -- polling ------------------------------------------------------------

    def begin_get(self) -> Verdict:
        """A polling GET arrived: register it as the one waiting GET, or refuse a second one.

        A second GET closes the session: the first one is answered with ``close``.
        """
        if self.transport is not _POLLING:
            return Verdict.BAD_REQUEST
        if self._get_waiting:
            self._close("duplicate request", engineio.CLOSE)
            return Verdict.BAD_REQUEST
        self._get_waiting = True
        return Verdict.OK

    def take_get_body(self) -> bytes | None:
        """The body to answer the waiting GET with now, or ``None`` to keep it waiting.

        Buffered packets are sent as one payload.  While an upgrade is probing the
        GET gets ``noop`` and the buffered packets wait for the WebSocket.
        """
        if not self._get_waiting:
            return None
        if self._final is not None:
            self._buffer.append(engineio.encode_polling_packet(self._final))
            body = engineio.RECORD_SEPARATOR.join(self._buffer)
            self._buffer, self._final = [], None
        elif self._probing:
            body = "6"
        elif self._buffer:
            body = engineio.RECORD_SEPARATOR.join(self._buffer)
            self._buffer = []
        elif self.close_reason is not None:
            body = "6"
        else:
            return None
        self._get_waiting = False
        return body.encode()

    def abort_get(self) -> None:
        """The waiting GET's HTTP connection went away before it was answered."""
        if self._get_waiting:
            self._get_waiting = False
            self._close("transport error", None)

    def begin_post(self, length: int | None) -> Verdict:
        """A polling POST arrived (``length`` from Content-Length if known): accept it or refuse it."""
        if self.transport is not _POLLING or self.close_reason is not None:
            return Verdict.BAD_REQUEST
        if self._post_active:
            self._close("duplicate request", engineio.CLOSE)
            return Verdict.BAD_REQUEST
        if length is not None and length > self.max_payload:
            self._close("payload too large", engineio.CLOSE)
            return Verdict.TOO_LARGE
        self._post_active = True
        return Verdict.OK

    def receive_post(self, body: bytes, now: float) -> Verdict:
        """The POST body was read: handle its packets (answer ``ok`` on :attr:`Verdict.OK`)."""
        self._post_active = False
        if self.close_reason is not None:
            return Verdict.BAD_REQUEST
        if len(body) > self.max_payload:
            self._close("payload too large", engineio.CLOSE)
            return Verdict.TOO_LARGE
        try:
            packets = engineio.decode_payload(body)
            for packet in packets:
                self._on_packet(packet, now, websocket=False)
        except ProtocolError as exc:
            logger.debug("engine.io %s: %s", self.sid, exc)
            self._close("parse error", engineio.CLOSE)
            return Verdict.BAD_REQUEST
        return Verdict.OK

    # -- WebSocket ----------------------------------------------------------

    def begin_upgrade(self) -> bool:
        """A WebSocket opened with this session's id: accept it as the probe, or refuse a second one."""
        if self.transport is not _POLLING or self._probing or self.close_reason is not None:
            return False
        self._probing = True
        return True

    def abort_upgrade(self) -> None:
        """The probing WebSocket closed before the upgrade finished: stay on polling."""
        self._probing = False

    def receive_ws(self, text: str | None, data: bytes | None, now: float) -> None:
        """Handle one WebSocket frame (of the session's WebSocket or of the probing one)."""
        if self.close_reason is not None:
            return
        size = len(data) if data is not None else len(text or "")
        if size > self.max_payload:
            self._close("payload too large", None)
            return
        try:
            self._on_packet(engineio.decode_ws(text, data), now, websocket=True)
        except ProtocolError as exc:
            logger.debug("engine.io %s: %s", self.sid, exc)
            self._close("parse error", None)

    # -- packets ------------------------------------------------------------

    def _on_packet(self, packet: Packet, now: float, *, websocket: bool) -> None:
        kind = packet.type
        probing = websocket and self.transport is _POLLING
        if probing and kind not in (_PING, _UPGRADE, _NOOP):
            raise ProtocolError(f"packet {kind.name} on a WebSocket before the upgrade")
        if kind is _MESSAGE:
            data = packet.data
            self._received.append(data if isinstance(data, bytes) else "4" + data)
        elif kind is _PONG:
            self._pong_due = None
            if self.heartbeat:
                self._next_ping = now + self.ping_interval
            else:
                self._received.append("3")
        elif kind is _PING and probing and packet.data == engineio.PROBE:
            self._ws_out.append(engineio.encode_ws(Packet(_PONG, engineio.PROBE)))
        elif kind is _UPGRADE and probing:
            self.transport = _WEBSOCKET
            self._probing = False
            buffered, self._buffer = self._buffer, []
            for payload in buffered:
                self._ws_out.extend(engineio.payload_frames(payload))
        elif kind is _CLOSE:
            self._close("client close", engineio.NOOP)
        elif kind is _NOOP:
            pass
        else:
            raise ProtocolError(f"unexpected Engine.IO packet {kind.name} from a client")

    def _close(self, reason: str, final: Packet | None, *, drain: bool = False) -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self._drain = drain
        if not drain:  # the client went away or broke the protocol: nothing more is for it
            self._buffer.clear()
        self._final = final
        self._next_ping = self._pong_due = None
        logger.debug("engine.io %s closed: %s", self.sid, reason)

    def __repr__(self) -> str:
        state = self.close_reason or "open"
        return f"EngineSession(sid={self.sid!r}, transport={self.transport.value}, {state})"


__all__ = ["CLOSE_CODES", "EngineSession", "Transport", "Verdict"]
