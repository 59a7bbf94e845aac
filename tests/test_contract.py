"""The exported contract, without npm: the document's shape, the types' text, the CLI, the code tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
from conftest import ROOT

from starlette_realtime import Connection, RealtimeEndpoint, on_event, status
from starlette_realtime.contract import (
    asyncapi_document,
    asyncapi_json,
    build_contract,
    declared_emits,
    emits,
    typescript_types_of,
)
from starlette_realtime.contract.typescript import pascal

CONTRACT = ROOT / "tests" / "contract"


@pytest.fixture(scope="module")
def app() -> Any:
    sys.path.insert(0, str(CONTRACT))
    try:
        import app as contract_app  # tests/contract/app.py

        return contract_app
    finally:
        sys.path.remove(str(CONTRACT))


@pytest.fixture(scope="module")
def doc(app: Any) -> dict[str, Any]:
    return asyncapi_document(build_contract(app.router), title="T", version="1", server="wss://x.example/rt")


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_one_channel_per_namespace(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert {k: v["address"] for k, v in doc["channels"].items()} == {
        "chat": "/chat", "admin.rooms": "/admin/rooms", "shop": "/shop", "root": "/",
    }
    assert doc["servers"]["realtime"] == {
        "host": "x.example", "protocol": "wss", "pathname": "/rt/",
        "description": doc["servers"]["realtime"]["description"],
    }


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert len(refs) > 50
    for ref in refs:
        _resolve(doc, ref)


def test_an_operation_per_handler_with_payload_and_reply(doc: dict[str, Any]) -> None:
    ops = doc["operations"]
    say = ops["chat.receive.say"]
    assert say["action"] == "receive" and say["channel"] == {"$ref": "#/channels/chat"}
    msg = _resolve(doc, say["messages"][0]["$ref"])
    assert msg["name"] == "say"
    assert msg["payload"] == {"$ref": "#/components/schemas/Say"}
    assert msg["headers"]["properties"]["event"] == {"const": "say", "description": "the event name"}
    assert msg["summary"] == "Say something in a room the connection joined."
    replies = [_resolve(doc, r["$ref"]) for r in say["reply"]["messages"]]
    assert replies[0]["payload"] == {"type": "null"}  # -> None
    assert replies[1]["name"] == "ack_error"
    assert replies[1]["payload"] == {"$ref": "#/components/schemas/AckError"}
    join = [_resolve(doc, r["$ref"]) for r in ops["chat.receive.join"]["reply"]["messages"]]
    assert join[0]["payload"] == {"type": "array", "items": {"type": "string"}}
    # Names that are not valid keys (":", "/", "$") are sanitized; the message keeps the real name.
    stats = _resolve(doc, ops["chat.receive.room_stats"]["messages"][0]["$ref"])
    assert stats["name"] == "room:stats" and stats["payload"] == {"type": "null"}
    post = _resolve(doc, ops["chat.receive.post"]["reply"]["messages"][0]["$ref"])
    assert post["payload"] == {"enum": ["ok", "queued"]}
    presence = _resolve(doc, ops["chat.receive._presence.list"]["messages"][0]["$ref"])
    assert presence["name"] == "$presence.list"
    assert ops["chat.receive._presence.list"]["tags"] == [{"name": "reserved"}]


def test_pydantic_models(doc: dict[str, Any], app: Any) -> None:
    schemas = doc["components"]["schemas"]
    order = _resolve(doc, doc["operations"]["shop.receive.order"]["messages"][0]["$ref"])
    assert order["payload"] == {"$ref": "#/components/schemas/Order"}
    assert schemas["Order"]["properties"]["items"]["items"] == {"$ref": "#/components/schemas/Item"}
    assert schemas["Item"]["properties"]["sku"]["minLength"] == 3
    assert schemas["Item"]["description"].startswith("A line of an order")
    slot = schemas["Order"]["properties"]["slot"]["anyOf"][0]
    assert slot["items"] == [{"type": "integer"}, {"type": "integer"}] and "prefixItems" not in slot
    ack = _resolve(doc, doc["operations"]["shop.receive.order"]["reply"]["messages"][0]["$ref"])
    assert ack["payload"] == {"$ref": "#/components/schemas/Receipt"}
    ts = typescript_types_of(app.router)
    assert "  order: { payload: Order; ack: Receipt };" in ts
    assert "  slot?: [number, number] | null;" in ts
    assert "  shipped: Receipt;" in ts


def test_declared_server_events(doc: dict[str, Any]) -> None:
    ops = doc["operations"]
    sends = sorted(k for k, v in ops.items() if v["action"] == "send" and k.startswith("chat."))
    assert sends == ["chat.send._presence", "chat.send._resync", "chat.send.mood", "chat.send.post",
                     "chat.send.said", "chat.send.typing"]
    said = _resolve(doc, ops["chat.send.said"]["messages"][0]["$ref"])
    assert said["payload"] == {"$ref": "#/components/schemas/Said"}
    assert "offset" in said["headers"]["properties"]
    # A client event and a server event may share a name: their messages stay apart.
    post_in = _resolve(doc, ops["chat.receive.post"]["messages"][0]["$ref"])
    post_out = _resolve(doc, ops["chat.send.post"]["messages"][0]["$ref"])
    assert post_in is not post_out and post_in["name"] == post_out["name"] == "post"
    assert "chat.send._presence" in ops and "root.send._presence" not in ops


def test_auth_payload(doc: dict[str, Any]) -> None:
    chat = doc["channels"]["chat"]["messages"]["connect"]["payload"]
    assert chat == {"$ref": "#/components/schemas/TokenAuth"}
    assert doc["components"]["schemas"]["TokenAuth"]["required"] == ["token"]
    assert doc["channels"]["root"]["messages"]["connect"]["payload"] == {"type": "null"}
    # $auth takes the same payload as CONNECT.
    auth = _resolve(doc, doc["operations"]["chat.receive._auth"]["messages"][0]["$ref"])
    assert auth["payload"] == chat
    assert "root.receive._auth" not in doc["operations"]


def test_codes_from_status(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    close = {alt["const"]: alt["x-retryable"] for alt in schemas["CloseCode"]["oneOf"]}
    assert close == {code: retry for code, (retry, _) in status.CLOSE_CODES.items()}
    ack = [alt.get("const") for alt in schemas["AckErrorCode"]["anyOf"]]
    assert status.INVALID_PAYLOAD in ack and status.UNKNOWN_EVENT in ack and "duplicate" in ack
    assert ack[-1] is None  # open-ended: an application's own code
    connect = {alt.get("const"): alt.get("x-retryable") for alt in schemas["ConnectErrorCode"]["anyOf"]}
    assert connect[status.INVALID_TOKEN] is True and connect[status.UNKNOWN_NAMESPACE] is None
    assert schemas["AckError"]["items"][0] == {"$ref": "#/components/schemas/AckErrorCode"}


def test_every_status_error_code_is_in_the_contract(doc: dict[str, Any]) -> None:
    # status.py is the one table: every code it names reaches the document.
    named = {v for k, v in vars(status).items() if k.isupper() and not k.startswith("WS_") and isinstance(v, str)}
    schemas = doc["components"]["schemas"]
    listed = {alt.get("const") for name in ("AckErrorCode", "ConnectErrorCode") for alt in schemas[name]["anyOf"]}
    assert named <= listed
    assert {alt["const"] for alt in schemas["CloseCode"]["oneOf"]} == set(status.CLOSE_CODES)


def test_schemas_are_draft07(doc: dict[str, Any]) -> None:
    text = json.dumps(doc)
    assert "prefixItems" not in text and "$defs" not in text and '"discriminator": {' not in text
    image = doc["components"]["schemas"]["Image"]["properties"]["size"]
    assert image["items"] == [{"type": "integer"}, {"type": "integer"}] and image["additionalItems"] is False


def test_typescript_event_maps(app: Any) -> None:
    ts = typescript_types_of(app.router)
    assert 'import type { CallOptions, ClientEvents, EmitOptions, EventMeta, NamespaceOption, RealtimeClient } ' \
           'from "./client.js";' in ts
    assert "export interface Say {\n  /** the room */\n  room: string;\n  text: string;\n" \
           "  reply_to?: number | null;\n}" in ts
    assert "  say: { payload: Say; ack: null };" in ts
    assert "  join: { payload: string; ack: string[] };" in ts
    assert '  "room:stats": { payload: null; ack: Stats };' in ts
    assert '  post: { payload: Text | Image; ack: "ok" | "queued" };' in ts
    assert "export interface ChatServerEvents {" in ts and "  said: Said;" in ts and "  post: Text | Image;" in ts
    assert "export type ChatAuth = TokenAuth;" in ts and "export type RootAuth = null;" in ts
    assert '  "/admin/rooms": { client: AdminRoomsClientEvents; server: AdminRoomsServerEvents; ' \
           'auth: AdminRoomsAuth };' in ts
    assert '  said: (data: ChatServerEvents["said"]) => void;' in ts
    assert "export interface TypedRealtimeClient<D extends NamespaceName>" in ts
    assert '  | "invalid_payload"' in ts and "  | 4005" in ts
    # Several namespaces: no unprefixed socket.io names (they would be ambiguous).
    assert "export type ServerToClientEvents" not in ts
    one = typescript_types_of([app.Chat], client_module="/realtime/client.js")
    assert "export type ServerToClientEvents = ChatServerToClientEvents;" in one
    assert 'from "/realtime/client.js";' in one


def test_namespace_type_names() -> None:
    assert [pascal(p) for p in ("/", "/chat", "/admin/rooms", "/2fa", "/a-b_c")] == [
        "Root", "Chat", "AdminRooms", "Ns2fa", "ABC",
    ]


def test_declared_emits_inherit_and_validate() -> None:
    @emits(a=int, b=None)
    class Base(RealtimeEndpoint):
        namespace = "/base"

    @emits({"b": str, "c:d": bytes})
    class Child(Base):
        namespace = "/child"

    class Attr(Child):
        namespace = "/attr"
        emits: ClassVar[dict[str, Any]] = {"e": float}

    assert declared_emits(Base) == {"a": int, "b": type(None)}
    assert declared_emits(Child) == {"a": int, "b": str, "c:d": bytes}
    assert declared_emits(Attr) == {"a": int, "b": str, "c:d": bytes, "e": float}
    with pytest.raises(ValueError, match="invalid event name"):
        emits({"no spaces": int})

    class Worse(RealtimeEndpoint):
        namespace = "/worse"
        emits: ClassVar[Any] = ["a"]

    with pytest.raises(TypeError, match="must be a dict"):
        declared_emits(Worse)


class Opaque:
    """A type msgspec has no JSON Schema for."""


class CloseCode(msgspec.Struct):
    """An application type named like one of the contract's code tables."""

    code: int


def test_a_type_without_schema_is_reported() -> None:
    class Ep(RealtimeEndpoint):
        namespace = "/opaque"

        @on_event("x")
        async def x(self, conn: Connection, data: Opaque) -> None:
            pass

    with pytest.raises(TypeError, match="has no JSON Schema"):
        asyncapi_json(Ep)


def test_unannotated_handler_is_any() -> None:
    class Loose(RealtimeEndpoint):
        namespace = "/loose"

        @on_event("x")
        async def x(self, conn, data):  # type: ignore[no-untyped-def]
            return data

    doc = asyncapi_document(build_contract([Loose]))
    msgs = doc["channels"]["loose"]["messages"]
    assert msgs["c2s.x"]["payload"] == {} and msgs["c2s.x.ack"]["payload"] == {}
    assert "  x: { payload: unknown; ack: unknown };" in typescript_types_of([Loose])


def test_struct_named_like_a_code_table_is_refused() -> None:
    class Ep(RealtimeEndpoint):
        namespace = "/clash"

        @on_event("x")
        async def x(self, conn: Connection, data: CloseCode) -> None:
            pass

    with pytest.raises(ValueError, match="reserves"):
        asyncapi_json(Ep)


def test_cli_writes_both_files(tmp_path: Path) -> None:
    out, types = tmp_path / "asyncapi.json", tmp_path / "types.d.ts"
    proc = subprocess.run(
        [sys.executable, "-m", "starlette_realtime.contract", "app:router", "--out", str(out), "--types", str(types),
         "--title", "Chat", "--version", "2.0.0"],
        cwd=CONTRACT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    written = json.loads(out.read_bytes())
    assert written["info"]["title"] == "Chat" and written["info"]["version"] == "2.0.0"
    assert "servers" not in written
    assert "export interface ChatClientEvents {" in types.read_text()


def test_cli_errors(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "starlette_realtime.contract", *args], cwd=CONTRACT,
                              capture_output=True, text=True, timeout=60, check=False)

    assert run("app:router").returncode == 2  # neither --out nor --types
    bad = run("app", "--out", "-")
    assert bad.returncode == 1 and "module:attribute" in bad.stderr
    missing = run("app:nothing", "--out", "-")
    assert missing.returncode == 1 and "nothing" in missing.stderr
    stdout = run("app:Root", "--out", "-")
    assert stdout.returncode == 0 and json.loads(stdout.stdout)["channels"]["root"]["address"] == "/"


def test_contract_files_fill_servers_from_the_request(app: Any) -> None:
    from starlette_realtime.contract.serve import ContractFiles

    files = ContractFiles(app.router, title="Served", version="9")
    scope = {"type": "http", "scheme": "https", "root_path": "/realtime", "path": "/realtime/asyncapi.json",
             "headers": [(b"host", b"chat.example:8443")]}
    body, ctype = files.get("asyncapi.json", scope) or (b"", b"")
    doc = json.loads(body)
    assert ctype == b"application/json"
    assert list(doc)[:3] == ["asyncapi", "info", "servers"] and doc["info"]["title"] == "Served"
    assert doc["servers"]["realtime"]["host"] == "chat.example:8443"
    assert doc["servers"]["realtime"]["protocol"] == "wss" and doc["servers"]["realtime"]["pathname"] == "/realtime/"
    # A Host header that is not a plain host[:port] stays out of the document.
    for host in (b"evil/x", b"a{b}", b"x y", b""):
        odd = json.loads((files.get("asyncapi.json", {**scope, "headers": [(b"host", host)]}) or (b"",))[0])
        assert "servers" not in odd
    types, ttype = files.get("types.d.ts", scope) or (b"", b"")
    assert ttype == b"application/typescript" and b"export interface ChatClientEvents" in types
    assert files.get("client.js", scope) is None


def test_router_serves_the_contract_over_uvicorn(app: Any) -> None:
    import httpx
    from conftest import serve
    from starlette.applications import Starlette

    from starlette_realtime import RealtimeRouter

    served = RealtimeRouter([app.Chat, app.Root], contract=True)
    plain = RealtimeRouter([app.Root])
    web = Starlette()
    served.mount(web, "/realtime")
    plain.mount(web, "/plain")
    with serve(web) as server, httpx.Client(base_url=server.http, timeout=10) as http:
        doc = http.get("/realtime/asyncapi.json")
        assert doc.status_code == 200 and doc.headers["content-type"] == "application/json; charset=utf-8"
        body = doc.json()
        assert set(body["channels"]) == {"chat", "root"}
        assert body["servers"]["realtime"] == {**body["servers"]["realtime"], "protocol": "ws",
                                               "host": f"127.0.0.1:{server.port}", "pathname": "/realtime/"}
        types = http.get("/realtime/types.d.ts")
        assert types.status_code == 200 and types.headers["content-type"].startswith("application/typescript")
        assert "export interface ChatClientEvents {" in types.text and 'from "./client.js";' in types.text
        # client.d.ts, which types.d.ts imports, is served beside it.
        assert http.get("/realtime/client.d.ts").status_code == 200
        # Off by default.
        assert http.get("/plain/asyncapi.json").status_code == 426
        assert http.get("/plain/types.d.ts").status_code == 426
        assert http.get("/realtime/other.json").status_code == 426


@emits(said=str)
class Declared(RealtimeEndpoint):
    namespace = "/declared"

    @on_event("go")
    async def go(self, conn: Connection, event: str) -> str:
        await conn.emit(event, "x")
        return event


class Undeclared(RealtimeEndpoint):
    namespace = "/free"

    @on_event("go")
    async def go(self, conn: Connection, event: str) -> str:
        await conn.emit(event, "x")
        return event


@pytest.mark.parametrize("check", [True, False])
async def test_development_mode_reports_an_undeclared_emit_once(check: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Over real uvicorn: the undeclared event still reaches the client; the log says so once per event."""
    import anyio
    from conftest import serve
    from starlette.applications import Starlette

    from starlette_realtime import RealtimeRouter
    from starlette_realtime.client import RealtimeClient

    router = RealtimeRouter([Declared, Undeclared], check_emits=check)
    web = Starlette()
    router.mount(web, "/realtime")
    got: list[tuple[str, str]] = []
    caplog.set_level("WARNING", logger="starlette_realtime.contract")
    with serve(web) as srv, anyio.fail_after(20):
        async with RealtimeClient(srv.url + "/realtime", namespaces=["/declared", "/free"]) as client:
            for ns in ("/declared", "/free"):
                client.on("*", lambda event, data, ns=ns: got.append((ns, event)), namespace=ns)
            for event in ("said", "oops", "oops", "other"):
                assert await client.call("go", event, namespace="/declared") == event
                assert await client.call("go", event, namespace="/free") == event
            while len(got) < 8:
                await anyio.sleep(0.01)
    assert sorted(got).count(("/declared", "oops")) == 2  # allowed: every emit went out
    reports = [r.getMessage() for r in caplog.records if r.name == "starlette_realtime.contract"]
    if check:
        assert reports == [
            "namespace '/declared' emitted 'oops', which its endpoint does not declare (declared: said); "
            "add it to @emits so that the contract describes it",
            "namespace '/declared' emitted 'other', which its endpoint does not declare (declared: said); "
            "add it to @emits so that the contract describes it",
        ]
    else:
        assert reports == []
