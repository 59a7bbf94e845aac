"""Authentication at the namespace handshake: signed tokens, Starlette users and cookie sessions.

An authenticator is any object with ``async authenticate(conn) -> user`` that
raises :class:`~starlette_realtime.exceptions.Rejected` to refuse; set it as an
endpoint's ``auth`` class attribute.  It runs when the client sends CONNECT,
before ``on_connect`` and before any event of that namespace is handled.

* :class:`SignedTokenAuth` checks a token signed with itsdangerous that the
  client sends in the CONNECT auth payload (``{"token": ...}``), never in the
  URL, where it would end up in access logs.
* :class:`StarletteAuth` takes the user that Starlette's ``AuthenticationMiddleware``
  put in the scope, and :class:`SessionAuth` a user id that Starlette's
  ``SessionMiddleware`` read from the session cookie.  Both rely on credentials
  the browser sends by itself (cookies), so a router serving them refuses
  foreign origins unless ``allowed_origins`` says otherwise (see docs/security.md).

A user object with an ``expires_at`` attribute (seconds since the epoch, like
:attr:`Identity.expires_at`) gets its WebSocket closed with 4003 at that time
unless the client sends a fresh credential with the reserved ``$auth`` event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, runtime_checkable

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

from . import status
from .exceptions import Rejected

if TYPE_CHECKING:
    from .connection import Connection

#: The itsdangerous salt of handshake tokens: a token signed for another purpose
#: with the same key (a session string, a password-reset link) is not accepted.
TOKEN_SALT: Final = "starlette_realtime.auth"

#: Longer tokens are refused before their signature is even checked.
MAX_TOKEN_LENGTH: Final = 4096


@runtime_checkable
class Authenticator(Protocol):
    """What an endpoint's ``auth`` attribute must be."""

    async def authenticate(self, conn: Connection) -> Any:
        """Return the user of a connecting client, or raise ``Rejected`` to refuse it."""


class Identity:
    """An authenticated user: its id, the claims its credential carried, and when it expires.

    Its ``repr`` shows the id and the claim names, never a token or a claim's value.

    Attributes:
        id: the user id (``user_key`` and ``router.disconnect_user`` use it).
        claims: the other claims, e.g. ``{"rooms": ["ops"], "admin": False}``.
        expires_at: when the credential expires, in seconds since the epoch (``None``: never).
    """

    __slots__ = ("claims", "expires_at", "id")

    is_authenticated: ClassVar[bool] = True

    def __init__(self, id: str, claims: Mapping[str, Any] | None = None, *, expires_at: float | None = None) -> None:
        self.id = id
        self.claims: dict[str, Any] = dict(claims or {})
        self.expires_at = expires_at

    @property
    def identity(self) -> str:
        """The user id (the name Starlette's ``BaseUser`` uses)."""
        return self.id

    @property
    def display_name(self) -> str:
        """The user id (the name Starlette's ``BaseUser`` uses)."""
        return self.id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return self.id == other.id and self.claims == other.claims

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Identity(id={self.id!r}, claims={sorted(self.claims)!r})"


def _token_of(payload: Any) -> Any:
    if isinstance(payload, Mapping):
        return payload.get("token")
    return None


class SignedTokenAuth:
    """Tokens signed with a secret key, checked at the namespace handshake.

    The server (an HTTP login view, say) issues a token with :meth:`issue`; the client
    sends it in the CONNECT auth payload, ``{"token": "..."}``.  Tokens carry the user id,
    any claims and the time they were signed; they are valid for ``max_age`` seconds.

    Args:
        secret_keys: one key or several, **newest first**: tokens are signed with the
            first and accepted with any, so a key can be rotated without logging anyone out.
        max_age: seconds a token stays valid after it was issued.  Time stamps have
            one-second resolution, so a token is valid for between ``max_age - 1``
            and ``max_age`` seconds.
        leeway: seconds a token's issue time may lie in the future (clocks of the
            issuing and checking machines that disagree); ``0`` by default.
        salt: the itsdangerous salt; change it to keep tokens of two apps apart.
        clock: the wall clock (seconds since the epoch), injectable for tests.

    Raises:
        ValueError: no key, an empty key, or ``max_age`` not positive.
    """

    ambient_credentials: ClassVar[bool] = False

    def __init__(
        self,
        secret_keys: str | bytes | Sequence[str | bytes],
        *,
        max_age: float,
        leeway: float = 0.0,
        salt: str = TOKEN_SALT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        given = [secret_keys] if isinstance(secret_keys, (str, bytes)) else list(secret_keys)
        keys = [k.encode() if isinstance(k, str) else bytes(k) for k in given]
        if not keys or any(not k for k in keys):
            raise ValueError("SignedTokenAuth needs at least one non-empty secret key")
        if max_age <= 0:
            raise ValueError("max_age must be positive: a token without expiry cannot be revoked")
        self.max_age = max_age
        self.leeway = leeway
        self.clock = clock

        class _Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        # itsdangerous signs with the *last* key and accepts any: we take newest first.
        self._serializer = URLSafeTimedSerializer(list(reversed(keys)), salt=salt, signer=_Signer)

    def issue(self, user_id: str, **claims: Any) -> str:
        """Sign a token for a user.

        Args:
            user_id: the user id.
            **claims: anything JSON can carry (room lists, roles, a tenant id).  They are
                signed, not encrypted: the client can read them.

        Returns:
            The token, URL-safe text.
        """
        return self._serializer.dumps([str(user_id), claims])

    def verify(self, token: str) -> Identity:
        """Check a token and return the identity it names.

        Args:
            token: the token, as :meth:`issue` returned it.

        Returns:
            The identity, with ``expires_at`` set.

        Raises:
            Rejected: ``INVALID_TOKEN`` (retryable) when the token is malformed, forged,
                signed with an unknown key or another salt, expired, or issued in the future.
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise Rejected(status.INVALID_TOKEN, "malformed token", retryable=True)
        try:
            value, signed = self._serializer.loads(token, return_timestamp=True)
        except BadData:
            # The exception's text quotes parts of the token: it is never passed on.
            raise Rejected(status.INVALID_TOKEN, "invalid token", retryable=True) from None
        issued = signed.timestamp()
        now = self.clock()
        if issued - now > self.leeway:
            raise Rejected(status.INVALID_TOKEN, "token issued in the future (check the clocks)", retryable=True)
        expires_at = issued + self.max_age
        if now >= expires_at:
            raise Rejected(status.INVALID_TOKEN, "token expired", retryable=True)
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not isinstance(value[0], str)
            or not isinstance(value[1], dict)
        ):
            raise Rejected(status.INVALID_TOKEN, "invalid token", retryable=True)
        return Identity(value[0], value[1], expires_at=expires_at)

    async def authenticate(self, conn: Connection) -> Identity:
        """Check the token of the CONNECT auth payload (``{"token": ...}``).

        Args:
            conn: the connecting client; only ``conn.auth`` is read.

        Returns:
            The identity the token names.

        Raises:
            Rejected: ``AUTHENTICATION_REQUIRED`` without a token, ``INVALID_TOKEN``
                (retryable) with a bad or expired one.
        """
        token = _token_of(conn.auth)
        if token is None:
            raise Rejected(status.AUTHENTICATION_REQUIRED, "send {\"token\": ...} as the CONNECT auth payload")
        return self.verify(token)

    def __repr__(self) -> str:
        return f"SignedTokenAuth(max_age={self.max_age}, leeway={self.leeway})"


class StarletteAuth:
    """Use the user that Starlette's ``AuthenticationMiddleware`` authenticated.

    Any ``AuthenticationBackend`` works; the middleware must wrap the router (it runs on
    the WebSocket handshake as on any request).

    Args:
        required: refuse anonymous connections with ``AUTHENTICATION_REQUIRED``.
        scopes: every one of these must be in ``scope["auth"].scopes`` (else ``REJECTED``).
    """

    ambient_credentials: ClassVar[bool] = True

    def __init__(self, *, required: bool = True, scopes: Sequence[str] = ()) -> None:
        self.required = required
        self.scopes = tuple(scopes)

    async def authenticate(self, conn: Connection) -> Any:
        """Return ``scope["user"]`` when it is authenticated (``None`` for anonymous).

        Args:
            conn: the connecting client.

        Returns:
            The Starlette user, or ``None`` when anonymous connections are allowed.

        Raises:
            Rejected: anonymous while ``required``, or a scope is missing.
            RuntimeError: no ``AuthenticationMiddleware`` in front of the router.
        """
        if "user" not in conn.scope:
            raise RuntimeError("StarletteAuth needs Starlette's AuthenticationMiddleware in front of the router")
        user = conn.scope["user"]
        if not getattr(user, "is_authenticated", False):
            if self.required:
                raise Rejected(status.AUTHENTICATION_REQUIRED, "authentication required")
            return None
        if self.scopes:
            granted = set(getattr(conn.scope.get("auth"), "scopes", ()) or ())
            missing = [s for s in self.scopes if s not in granted]
            if missing:
                raise Rejected(status.REJECTED, f"missing scope(s): {', '.join(missing)}")
        return user

    def __repr__(self) -> str:
        return f"StarletteAuth(required={self.required}, scopes={list(self.scopes)!r})"


class SessionAuth:
    """Use a user id from the cookie session of Starlette's ``SessionMiddleware``.

    The login view stores the id, ``request.session["user_id"] = ...``; the middleware
    must wrap the router.  Keep the cookie ``same_site="lax"`` (the default) or stricter.

    Args:
        key: the session key holding the user id.
        required: refuse connections without one with ``AUTHENTICATION_REQUIRED``.
    """

    ambient_credentials: ClassVar[bool] = True

    def __init__(self, *, key: str = "user_id", required: bool = True) -> None:
        self.key = key
        self.required = required

    async def authenticate(self, conn: Connection) -> Identity | None:
        """Return the identity named by the session (``None`` for anonymous).

        Args:
            conn: the connecting client.

        Returns:
            An :class:`Identity` without claims, or ``None`` when anonymous connections are allowed.

        Raises:
            Rejected: no user id in the session while ``required``.
            RuntimeError: no ``SessionMiddleware`` in front of the router.
        """
        session = conn.scope.get("session")
        if session is None:
            raise RuntimeError("SessionAuth needs Starlette's SessionMiddleware in front of the router")
        user_id = session.get(self.key)
        if user_id is None:
            if self.required:
                raise Rejected(status.AUTHENTICATION_REQUIRED, "not logged in")
            return None
        return Identity(str(user_id))

    def __repr__(self) -> str:
        return f"SessionAuth(key={self.key!r}, required={self.required})"


__all__ = [
    "MAX_TOKEN_LENGTH",
    "TOKEN_SALT",
    "Authenticator",
    "Identity",
    "SessionAuth",
    "SignedTokenAuth",
    "StarletteAuth",
]
