"""Optional Pydantic v2 support: models as handler payloads, acknowledgements and emitted values.

Nothing here imports Pydantic.  A Pydantic type can only exist once the application
has imported ``pydantic``, so every check first looks at ``sys.modules``: an app that
uses msgspec types alone pays one dictionary lookup per handler at class definition,
and nothing per event.

- :func:`needs_pydantic` tells whether a handler's payload annotation is for Pydantic
  (a ``BaseModel``, a Pydantic dataclass, ``Annotated`` with Pydantic or
  ``annotated_types`` constraints, or any type built from those).
- :class:`PydanticPayload` holds the handler's one ``TypeAdapter`` and builds one
  decoder per wire; a validation failure becomes ``msgspec.ValidationError`` with a
  message naming the field, so the endpoint answers ``invalid_payload`` as it does
  for msgspec types.
- :func:`enc_hook` is the msgspec encoders' fallback for values msgspec does not know:
  Pydantic models (and Pydantic's own types) are serialised as Pydantic would for JSON.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

if TYPE_CHECKING:
    from pydantic import TypeAdapter

#: Modules whose ``Annotated`` metadata msgspec would ignore but Pydantic enforces.
_CONSTRAINT_MODULES: Final = ("pydantic", "annotated_types")


def needs_pydantic(tp: Any) -> bool:
    """Return whether ``tp`` must be validated by Pydantic rather than msgspec.

    ``False`` whenever Pydantic has not been imported (no Pydantic type can exist then).
    """
    if "pydantic" not in sys.modules:
        return False
    return _walk(tp, set())


def _walk(tp: Any, seen: set[int]) -> bool:
    if id(tp) in seen:
        return False
    seen.add(id(tp))
    if isinstance(tp, type) and (
        hasattr(tp, "__pydantic_validator__") or hasattr(tp, "__get_pydantic_core_schema__")
    ):
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(tp)
        if any(type(m).__module__.split(".")[0] in _CONSTRAINT_MODULES for m in metadata):
            return True
        return _walk(base, seen)
    if origin is not None:
        return any(_walk(arg, seen) for arg in typing.get_args(tp) if arg is not Ellipsis)
    # A plain dataclass or TypedDict holding a model: Pydantic validates the whole of it.
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or typing.is_typeddict(tp)):
        try:
            hints = typing.get_type_hints(tp, include_extras=True)
        except Exception:
            return False
        return any(_walk(hint, seen) for hint in hints.values())
    return False


class PayloadWire(Protocol):
    """What :class:`PydanticPayload` needs from a wire (a codec)."""

    binary: bool

    def payload_decoder(self, tp: Any) -> Callable[[bytes], Any]: ...


class PydanticPayload:
    """One handler's Pydantic ``TypeAdapter``, built once, and its decoders.

    Args:
        tp: the payload annotation.

    Raises:
        TypeError: Pydantic cannot build a schema for ``tp``.
    """

    __slots__ = ("adapter", "type")

    def __init__(self, tp: Any) -> None:
        from pydantic import PydanticSchemaGenerationError, PydanticUserError, TypeAdapter

        self.type = tp
        try:
            self.adapter: TypeAdapter[Any] = TypeAdapter(tp)
        except (PydanticSchemaGenerationError, PydanticUserError) as exc:
            raise TypeError(f"Pydantic cannot validate {tp!r}: {exc}") from exc

    def decoder(self, wire: PayloadWire) -> Callable[[bytes], Any]:
        """Build the decoder of raw payloads from ``wire`` (called once per handler and wire).

        JSON text is validated by Pydantic's own JSON parser in one pass; other
        encodings are decoded to Python values by the wire, then validated.
        """
        from pydantic import ValidationError

        adapter = self.adapter
        if not wire.binary:
            validate_json = adapter.validate_json

            def decode_json(raw: bytes) -> Any:
                try:
                    return validate_json(bytes(raw))
                except ValidationError as exc:
                    raise msgspec.ValidationError(describe(exc)) from None

            return decode_json

        to_python = wire.payload_decoder(Any)
        validate_python = adapter.validate_python

        def decode_other(raw: bytes) -> Any:
            value = to_python(raw)
            try:
                return validate_python(value)
            except ValidationError as exc:
                raise msgspec.ValidationError(describe(exc)) from None

        return decode_other

    def __repr__(self) -> str:
        return f"PydanticPayload({self.type!r})"


def describe(exc: Any) -> str:
    """Word a Pydantic ``ValidationError`` as msgspec words its errors: ``message - at `$.path```.

    The first error is described; the count of the others follows.  The input value
    is never repeated (it may be large, or a secret).
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if not errors:
        return str(exc)
    first = errors[0]
    text = str(first.get("msg", "invalid value"))
    path = "$"
    for part in first.get("loc", ()):
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    if path != "$":
        text += f" - at `{path}`"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return text


def enc_hook(obj: Any) -> Any:
    """Turn a value msgspec cannot encode into one it can: Pydantic models and types, as Pydantic serialises them.

    Models are dumped in Pydantic's JSON mode with their aliases (as FastAPI answers),
    so that what a handler returns or emits validates again on the other side.

    Raises:
        TypeError: the value is not a Pydantic one either (msgspec's own message).
    """
    core = sys.modules.get("pydantic_core")
    if core is not None:
        try:
            return core.to_jsonable_python(obj, by_alias=True)
        except core.PydanticSerializationError:
            pass
    raise TypeError(f"Encoding objects of type {type(obj).__name__} is unsupported")
