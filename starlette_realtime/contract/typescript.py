"""TypeScript declarations of an app's contract.

From the same schemas as the AsyncAPI document: an interface or type alias per
named schema, then per namespace an event map for the browser client
(``<Ns>ClientEvents``: payload and ACK type by event name; ``<Ns>ServerEvents``:
data by event name), the same events in the ``ServerToClientEvents`` /
``ClientToServerEvents`` shape that ``socket.io-client`` users write, and
``TypedRealtimeClient<"/ns">``, the browser client's ``emit``/``call``/``on``
typed by event name.
"""

from __future__ import annotations

import json
import keyword
import re
from typing import Any, Final

from .codes import CODE_SCHEMAS
from .model import REF_PREFIX, Contract, Event, Namespace, schemas

_IDENT: Final = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_TS_RESERVED: Final = frozenset((
    "break", "case", "catch", "class", "const", "continue", "debugger", "default", "delete", "do", "else", "enum",
    "export", "extends", "false", "finally", "for", "function", "if", "import", "in", "instanceof", "new", "null",
    "return", "super", "switch", "this", "throw", "true", "try", "typeof", "var", "void", "while", "with", "as",
    "implements", "interface", "let", "package", "private", "protected", "public", "static", "yield", "any",
    "boolean", "number", "string", "symbol", "type", "unknown", "never", "object",
))


def _type_name(name: str) -> str:
    ident = re.sub(r"[^A-Za-z0-9_$]", "_", name)
    if not ident or ident[0].isdigit() or ident in _TS_RESERVED or keyword.iskeyword(ident):
        ident = "_" + ident
    return ident


def pascal(path: str) -> str:
    """The type-name prefix of a namespace: ``/chat`` -> ``Chat``, ``/`` -> ``Root``."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", path) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Root"
    return name if not name[0].isdigit() else "Ns" + name


def _prop(name: str) -> str:
    return name if _IDENT.match(name) else json.dumps(name)


def _doc(text: str | None, indent: str) -> str:
    if not text:
        return ""
    body = re.sub(r"``([^`]+)``", r"`\1`", text).replace("*/", "*\\/").strip()
    lines = body.splitlines()
    if len(lines) == 1:
        return f"{indent}/** {lines[0]} */\n"
    inner = "\n".join(f"{indent} *{' ' + line if line else ''}" for line in lines)
    return f"{indent}/**\n{inner}\n{indent} */\n"


class _Emitter:
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def union(self, parts: list[str]) -> str:
        unique: list[str] = []
        for p in parts:
            if p not in unique:
                unique.append(p)
        if "unknown" in unique:
            return "unknown"
        # An open set of codes keeps the literals' autocompletion: "a" | "b" | (string & {}).
        if "string" in unique and any(p.startswith('"') for p in unique):
            unique[unique.index("string")] = "(string & {})"
        return " | ".join(unique) if unique else "never"

    def ts(self, schema: Any, indent: str = "") -> str:
        if schema is True or schema == {}:
            return "unknown"
        if schema is False:
            return "never"
        if not isinstance(schema, dict):
            return "unknown"
        if "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith(REF_PREFIX):
                raise ValueError(f"unexpected $ref {ref!r}")
            return self.names[ref[len(REF_PREFIX):]]
        if "const" in schema:
            return json.dumps(schema["const"])
        if "enum" in schema:
            return self.union([json.dumps(v) for v in schema["enum"]])
        for combo in ("anyOf", "oneOf"):
            if combo in schema:
                return self.union([self._paren(self.ts(s, indent)) for s in schema[combo]])
        tp = schema.get("type")
        if isinstance(tp, list):
            return self.union([self.ts({**schema, "type": t}, indent) for t in tp])
        if tp == "string":
            return "string"
        if tp in ("integer", "number"):
            return "number"
        if tp == "boolean":
            return "boolean"
        if tp == "null":
            return "null"
        if tp == "array":
            return self._array(schema, indent)
        if tp == "object":
            return self._object(schema, indent)
        return "unknown"

    @staticmethod
    def _paren(text: str) -> str:
        return f"({text})" if " | " in text and not text.startswith("(") else text

    def _array(self, schema: dict[str, Any], indent: str) -> str:
        items = schema.get("items")
        if isinstance(items, list):
            least = schema.get("minItems", len(items))
            parts = [self.ts(s, indent) + ("" if i < least else "?") for i, s in enumerate(items)]
            rest = schema.get("additionalItems", True)
            if rest is not False and schema.get("maxItems") != len(items):
                parts.append(f"...{self._paren(self.ts(rest, indent))}[]")
            return "[" + ", ".join(parts) + "]"
        if items is None:
            return "unknown[]"
        return self._paren(self.ts(items, indent)) + "[]"

    def _object(self, schema: dict[str, Any], indent: str) -> str:
        props: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        if not props:
            value = "unknown" if extra in (None, True) else self.ts(extra, indent)
            return f"{{ [key: string]: {value} }}"
        required = set(schema.get("required", ()))
        inner = indent + "  "
        lines = ["{"]
        for name, sub in props.items():
            doc = sub.get("description") if isinstance(sub, dict) else None
            if doc:
                lines.append(_doc(doc, inner).rstrip("\n"))
            optional = "" if name in required else "?"
            lines.append(f"{inner}{_prop(name)}{optional}: {self.ts(sub, inner)};")
        if extra not in (None, False):
            lines.append(f"{inner}[key: string]: unknown;")
        lines.append(indent + "}")
        return "\n".join(lines)


_HEADER: Final = "Generated by starlette-realtime (python -m starlette_realtime.contract). Do not edit."


def typescript_types(
    contract: Contract, *, client_module: str = "./client.js", header: str | None = None
) -> str:
    """Build the TypeScript declarations (a ``.d.ts`` module) of a contract.

    Args:
        contract: from :func:`~starlette_realtime.contract.build_contract`.
        client_module: where the browser client's declarations are imported from
            (``client.d.ts`` is served next to ``types.d.ts``).
        header: a comment for the top of the file.

    Returns:
        The module's text.

    Raises:
        ValueError: a generated name collides with a schema's name.
    """
    by_type, components = schemas(contract)
    names = {name: _type_name(name) for name in components}
    em = _Emitter(names)
    out: list[str] = []
    out.append(f"// {header or _HEADER}\n")
    out.append(
        "import type { CallOptions, ClientEvents, EmitOptions, EventMeta, NamespaceOption, RealtimeClient } from "
        f"{json.dumps(client_module)};\n\n"
    )
    out.append("// Schemas ----------------------------------------------------------------\n\n")
    for name, schema in components.items():
        if name in CODE_SCHEMAS:
            continue
        out.append(_doc(schema.get("description") or None, ""))
        body = em.ts({k: v for k, v in schema.items() if k != "title"})
        if schema.get("type") == "object" and schema.get("properties"):
            out.append(f"export interface {names[name]} {body}\n\n")
        else:
            out.append(f"export type {names[name]} = {body};\n\n")
    out.append(_codes(contract))

    taken = set(names.values())
    out.append("// Namespaces -------------------------------------------------------------\n\n")
    entries: list[str] = []
    for ns in contract.namespaces:
        prefix = pascal(ns.path)
        mine = [prefix + s for s in ("ClientEvents", "ServerEvents", "Auth", "ServerToClientEvents",
                                     "ClientToServerEvents")]
        clash = taken.intersection(mine)
        if clash:
            raise ValueError(f"namespace {ns.path!r}: generated names {sorted(clash)} collide with other types")
        taken.update(mine)
        out.append(_namespace(ns, prefix, em, by_type))
        entries.append(
            f"  {json.dumps(ns.path)}: {{ client: {prefix}ClientEvents; server: {prefix}ServerEvents; "
            f"auth: {prefix}Auth }};"
        )
    out.append("/** Every namespace: its client events (payload and ACK), server events (data) and auth payload. */\n")
    out.append("export interface Namespaces {\n" + "\n".join(entries) + "\n}\n\n")
    if len(contract.namespaces) == 1:
        prefix = pascal(contract.namespaces[0].path)
        out.append("/** The only namespace's events, as socket.io-client users name them. */\n")
        out.append(f"export type ServerToClientEvents = {prefix}ServerToClientEvents;\n")
        out.append(f"export type ClientToServerEvents = {prefix}ClientToServerEvents;\n\n")
    out.append(_CLIENT)
    return "".join(out)


def _codes(contract: Contract) -> str:
    def literals(codes: tuple[Any, ...], open_ended: bool) -> str:
        lines = []
        for code in codes:
            retry = "" if code.retryable is None else (" (retryable)" if code.retryable else " (terminal)")
            if "retryable" in code.description:
                retry = ""
            lines.append(f"  /** {code.description}{retry} */\n  | {json.dumps(code.value)}")
        if open_ended:
            lines.append("  /** A code of the application. */\n  | (string & {})")
        return "\n".join(lines)

    return (
        "/** WebSocket close codes; unlisted 4000-4499 mean reconnect, 4500-4999 stop. */\n"
        f"export type CloseCode =\n{literals(contract.close_codes, False)};\n\n"
        "/** Codes of ACK errors (`RealtimeAckError.code`) and ERROR frames. */\n"
        f"export type AckErrorCode =\n{literals(contract.ack_error_codes, True)};\n\n"
        "/** Codes of CONNECT_ERROR frames (`ConnectError.code`). */\n"
        f"export type ConnectErrorCode =\n{literals(contract.connect_error_codes, True)};\n\n"
    )


def _namespace(ns: Namespace, prefix: str, em: _Emitter, by_type: dict[int, dict[str, Any]]) -> str:
    def t(tp: Any) -> str:
        return em.ts(by_type[id(tp)], "    ")

    def summary(ev: Event) -> str:
        return ev.description.split("\n\n", 1)[0] if ev.description else ""

    about = f'Namespace "{ns.path}" ({ns.endpoint}).' + (f" {ns.description.splitlines()[0]}" if ns.description else "")
    out = [_doc(about + " Client events: payload and ACK data.", "")]
    out.append(f"export interface {prefix}ClientEvents {{\n")
    for ev in ns.client_events:
        out.append(_doc(summary(ev), "  "))
        out.append(f"  {_prop(ev.name)}: {{ payload: {t(ev.payload)}; ack: {t(ev.reply)} }};\n")
    out.append("}\n\n")
    out.append(_doc(f'Namespace "{ns.path}": the data of the events the server sends.', ""))
    out.append(f"export interface {prefix}ServerEvents {{\n")
    for ev in ns.server_events:
        out.append(_doc(summary(ev), "  "))
        out.append(f"  {_prop(ev.name)}: {t(ev.payload)};\n")
    out.append("}\n\n")
    out.append(_doc(f'Namespace "{ns.path}": the CONNECT auth payload (`null`: none).', ""))
    out.append(f"export type {prefix}Auth = {t(ns.auth) if ns.auth is not None else 'null'};\n\n")
    out.append(_doc(f'Namespace "{ns.path}" in the shape socket.io-client users write.', ""))
    out.append(f"export interface {prefix}ServerToClientEvents {{\n")
    for ev in ns.server_events:
        out.append(f"  {_prop(ev.name)}: (data: {prefix}ServerEvents[{json.dumps(ev.name)}]) => void;\n")
    out.append("}\n\n")
    out.append(_doc(f'Namespace "{ns.path}" in the shape socket.io-client users write; the last argument is the ACK.',
                    ""))
    out.append(f"export interface {prefix}ClientToServerEvents {{\n")
    for ev in ns.client_events:
        ref = f"{prefix}ClientEvents[{json.dumps(ev.name)}]"
        out.append(
            f"  {_prop(ev.name)}: (payload: {ref}[\"payload\"], ack: (data: {ref}[\"ack\"]) => void) => void;\n"
        )
    out.append("}\n\n")
    return "".join(out)


_CLIENT: Final = """\
// The browser client, typed ------------------------------------------------

export type NamespaceName = keyof Namespaces;
export type ClientEventName<N extends NamespaceName> = keyof Namespaces[N]["client"] & string;
export type ServerEventName<N extends NamespaceName> = keyof Namespaces[N]["server"] & string;
export type ClientPayload<N extends NamespaceName, K extends ClientEventName<N>> =
  Namespaces[N]["client"][K] extends { payload: infer P } ? P : never;
export type ClientAck<N extends NamespaceName, K extends ClientEventName<N>> =
  Namespaces[N]["client"][K] extends { ack: infer A } ? A : never;
export type ServerData<N extends NamespaceName, K extends ServerEventName<N>> = Namespaces[N]["server"][K];

/**
 * `RealtimeClient` with `emit`, `call` and `on` typed by event name; `D` is the default namespace (the first of
 * `options.namespaces`), and `{ namespace }` in the options picks another one. Events without a payload take `null`.
 *
 *     const client: TypedRealtimeClient<"/chat"> = new RealtimeClient(url, { namespaces: ["/chat"] });
 */
export interface TypedRealtimeClient<D extends NamespaceName>
  extends Omit<RealtimeClient, "emit" | "call" | "on"> {
  emit<K extends ClientEventName<N>, N extends NamespaceName = D>(
    event: K, data: ClientPayload<N, K>, options: EmitOptions & { namespace?: N; volatile: true },
  ): Promise<boolean>;
  emit<K extends ClientEventName<N>, N extends NamespaceName = D>(
    event: K, data: ClientPayload<N, K>, options?: EmitOptions & { namespace?: N; volatile?: false },
  ): Promise<ClientAck<N, K>>;
  call<K extends ClientEventName<N>, N extends NamespaceName = D>(
    event: K, data: ClientPayload<N, K>, options?: CallOptions & { namespace?: N },
  ): Promise<ClientAck<N, K>>;
  on<K extends ServerEventName<N>, N extends NamespaceName = D>(
    event: K, handler: (data: ServerData<N, K>, meta: EventMeta) => unknown, options?: { namespace?: N },
  ): () => void;
  on<K extends "connect" | "disconnect" | "connect_error" | "recovery_failed" | "error">(
    event: K, handler: (data: ClientEvents[K], meta: EventMeta) => unknown, options?: NamespaceOption,
  ): () => void;
}
"""
