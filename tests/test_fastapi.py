"""The FastAPI app of docs/fastapi.md, served by real uvicorn and used with the Python client.

The app is the page's own code block (the one marked ``docs-test: server``), so the
docs cannot drift from what is tested here.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from conftest import IN_CI
from docblocks import ROOT, blocks
from procs import Node

from starlette_realtime import AckError
from starlette_realtime.client import ConnectRefused, RealtimeClient

for _extra in ("fastapi", "pydantic"):
    if importlib.util.find_spec(_extra) is None:
        _missing = f"missing {_extra} (pip install -e '.[test]')"
        if IN_CI:
            pytest.fail(_missing + " -- CI must install it", pytrace=False)
        pytest.skip(_missing, allow_module_level=True)

ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}


def docs_app_source() -> str:
    [server] = [b for b in blocks(ROOT / "docs" / "fastapi.md") if b.mode == "server"]
    assert server.module_name == "app"
    return server.source


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("fastapi_app")
    (where / "fastapi_docs_app.py").write_text(docs_app_source())
    return where


@pytest.fixture(scope="module")
def node(app_dir: Path) -> Iterator[Node]:
    env = {"PYTHONPATH": os.pathsep.join([str(app_dir), str(ROOT)]), "APP_SECRET": "test-secret"}
    with Node("fastapi_docs_app:app", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def module(app_dir: Path) -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("fastapi_docs_app", app_dir / "fastapi_docs_app.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


async def token(node: Node, headers: dict[str, str]) -> str:
    async with httpx.AsyncClient(base_url=node.http, headers=headers) as http:
        response = await http.post("/api/token")
        response.raise_for_status()
        return str(response.json()["token"])


def client(node: Node, auth: Any) -> RealtimeClient:
    return RealtimeClient(node.url + "/realtime", namespaces=["/chat"], auth=auth, reconnection=False)


async def test_pydantic_payloads_and_acks(node: Node, module: ModuleType) -> None:
    with anyio.fail_after(20):
        async with client(node, await token(node, ALICE)) as alice:
            assert await alice.call("join", "lobby", namespace="/chat", timeout=5) == ["lobby"]
            ack = await alice.call("say", {"room": "lobby", "text": "hi"}, namespace="/chat", timeout=5)
            said = module.Said.model_validate(ack)  # the ack validates with the model it was dumped from
            assert (said.room, said.text, said.author) == ("lobby", "hi", "alice")
            assert isinstance(ack["at"], str) and datetime.fromisoformat(ack["at"]) == said.at


async def test_a_constraint_breach_is_invalid_payload_naming_the_field(node: Node) -> None:
    with anyio.fail_after(20):
        async with client(node, await token(node, ALICE)) as alice:
            breaches = [
                ("say", {"room": "lobby", "text": ""}, "String should have at least 1 character - at `$.text`"),
                ("say", {"room": "Not A Room", "text": "x"}, "String should match pattern"),
                ("say", {"room": "lobby", "text": "x" * 501}, "at most 500 characters - at `$.text`"),
                ("say", {"room": "lobby"}, "Field required - at `$.text`"),
                ("join", "UPPER", "String should match pattern"),
            ]
            for event, payload, message in breaches:
                with pytest.raises(AckError) as err:
                    await alice.call(event, payload, namespace="/chat", timeout=5)
                assert err.value.code == "invalid_payload"
                assert message in err.value.message, err.value.message
            with pytest.raises(AckError) as err:
                await alice.call("say", {"room": "Not A Room", "text": "x"}, namespace="/chat", timeout=5)
            assert err.value.message.endswith("- at `$.room`")


async def test_a_model_emitted_from_a_route_reaches_the_room(node: Node, module: ModuleType) -> None:
    received: list[Any] = []
    got = anyio.Event()

    def on_said(data: Any) -> None:
        received.append(data)
        got.set()

    with anyio.fail_after(20):
        async with client(node, await token(node, BOB)) as bob:
            bob.on("said", on_said, namespace="/chat")
            await bob.call("join", "lobby", namespace="/chat", timeout=5)
            async with httpx.AsyncClient(base_url=node.http, headers=ALICE) as http:
                response = await http.post("/api/rooms/lobby/announcements", json={"text": "maintenance at 5"})
                assert response.status_code == 201, response.text
                assert response.json()["author"] == "alice"
                # A Pydantic breach in the route's body is FastAPI's own 422.
                bad = await http.post("/api/rooms/lobby/announcements", json={"text": ""})
                assert bad.status_code == 422
            await got.wait()
    from pydantic import TypeAdapter

    [said] = TypeAdapter(list[module.Said]).validate_python(received)
    assert (said.room, said.text, said.author) == ("lobby", "maintenance at 5", "alice")
    assert received[0] == response.json()


async def test_auth_is_shared_with_the_api(node: Node) -> None:
    with anyio.fail_after(20):
        async with httpx.AsyncClient(base_url=node.http) as http:
            assert (await http.post("/api/token")).status_code in (401, 403)
            wrong = await http.post("/api/token", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        with pytest.raises(ConnectRefused) as refused:
            async with client(node, None):
                pass
        assert refused.value.code == "AUTHENTICATION_REQUIRED"
        with pytest.raises(ConnectRefused) as refused:
            async with client(node, "forged-token"):
                pass
        assert refused.value.code == "INVALID_TOKEN"


async def test_the_lifespans_are_combined(module: ModuleType) -> None:
    app, realtime = module.app, module.realtime
    with anyio.fail_after(10):
        async with app.router.lifespan_context(app):
            assert realtime._started  # started by the app's lifespan, not by a first WebSocket
            assert isinstance(app.state.started_at, datetime)
        assert not realtime._started
