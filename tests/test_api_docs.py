"""The HTTP API explains itself: the bearer scheme in OpenAPI, errors that name the item."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.core.settings import Settings
from app.main import create_app
from testkit.clients import token
from testkit.databases import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http(sqlite_db: Database, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    asgi = create_app(Settings(database_url=sqlite_db.url, redis_url=redis_url))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://herald") as client:
            yield client
    finally:
        asgi.herald.close()


async def _post(http: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await http.post("/api/events", json=body,
                           headers={"Authorization": f"Bearer {token('billing', 'service')}"})


async def test_openapi_declares_the_bearer_scheme_on_protected_routes(
    http: httpx.AsyncClient,
) -> None:
    doc = (await http.get("/openapi.json")).json()
    schemes = doc["components"]["securitySchemes"]
    [(name, scheme)] = schemes.items()
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert doc["paths"]["/api/events"]["post"]["security"] == [{name: []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]


async def test_a_batch_error_names_the_item_that_failed(http: httpx.AsyncClient) -> None:
    good = {"stream": "user-1", "type": "invoice-issued", "data": {}}
    missing = await _post(http, [good, {"stream": "user-1", "data": {}}])
    assert missing.status_code == 422
    assert missing.json()["error"]["message"] == "item 1: type: Field required"
    bad_stream = await _post(http, [good, good, {**good, "stream": "users-1"}])
    assert bad_stream.status_code == 422
    assert bad_stream.json()["error"]["message"].startswith("item 2: unknown stream 'users-1'")


async def test_a_single_event_error_does_not_talk_about_lists(http: httpx.AsyncClient) -> None:
    answer = await _post(http, {"stream": "user-1", "data": {}})
    assert answer.status_code == 422
    assert answer.json()["error"] == {"code": "invalid", "message": "type: Field required"}


async def test_the_apps_lifespan_closes_what_create_app_opened(sqlite_db: Database,
                                                               redis_url: str) -> None:
    """Through the whole ASGI stack (shutdown hook, body limit, Socket.IO, FastAPI)."""
    asgi = create_app(Settings(database_url=sqlite_db.url, redis_url=redis_url))
    ctx = asgi.herald
    closed: list[str] = []

    class Recorder:
        def close(self) -> None:
            closed.append("nudger and the rest")

    ctx.closers.append(Recorder())
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    assert closed == ["nudger and the rest"]


async def test_docs_load_nothing_from_outside_the_web_node(http: httpx.AsyncClient) -> None:
    """/docs works offline: Swagger UI's script, stylesheet and icon are served locally."""
    import re

    page = await http.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]""", page.text)
    urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)  # the OpenAPI document
    assert len(urls) >= 4, urls
    assert [u for u in urls if not u.startswith("/")] == []
    for url in urls:
        assert (await http.get(url)).status_code == 200, url
