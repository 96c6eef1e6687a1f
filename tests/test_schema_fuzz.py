"""Schemathesis over the web node's own /openapi.json: no input the schema admits, or nearly
admits, gets a 500. Bounded: a few examples per operation, against a real web node; and
text no database can store (NUL) in every string parameter and every text of a body,
every run.

(Schemathesis's pytest plugin is not used: its lazy fixtures break on this pytest; its
per-operation Hypothesis strategies are. Its OpenAPI modules are imported at collection,
not lazily mid-suite: pytest rewrites them on first import, and that once failed in a
full run with "AST constructor recursion depth mismatch", a CPython 3.11 fault of the
AST builder seen when threads run (python/cpython#106905); at collection none do.)
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import schemathesis
import schemathesis.specs.openapi.schemas  # at collection (see above)
from hypothesis import HealthCheck, Phase, given, settings

from testkit.world import World

EXAMPLES = settings(max_examples=10, deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))


def _no_500(world: World, operation: Any, headers: dict[str, str]) -> None:
    @EXAMPLES
    @given(case=operation.as_strategy())
    def call(case: Any) -> None:
        response = case.call(base_url=world.url, headers=headers, timeout=20)
        assert response.status_code < 500, (case.method, case.formatted_path, case.body,
                                            response.text[:500])

    call()


def test_no_request_to_any_operation_of_the_schema_gets_a_500(world: World) -> None:
    schema = schemathesis.openapi.from_url(f"{world.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        role = "service" if operation.path == "/api/events" else "admin"
        _no_500(world, operation, {"Authorization": f"Bearer {world.token(role)}"})


def test_text_no_database_can_store_in_any_parameter_is_refused_not_a_500(world: World) -> None:
    """NUL in every string query and path parameter of every operation, one at a time (the
    fuzz above draws at random: it found a status filter with NUL that reached PostgreSQL,
    which refuses NUL in text, only by chance)."""
    spec = httpx.get(f"{world.url}/openapi.json", timeout=10).json()
    tried = 0
    with httpx.Client(base_url=world.url, timeout=20) as client:
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                params = [p for p in operation.get("parameters", [])
                          if p.get("schema", {}).get("type") == "string"
                          or any(s.get("type") == "string"
                                 for s in p.get("schema", {}).get("anyOf", []))]
                role = "service" if path == "/api/events" else "admin"
                for param in params:
                    url, query = path, {}
                    for other in operation.get("parameters", []):
                        if other["in"] == "path" and other is not param:
                            url = url.replace("{" + other["name"] + "}", "1")
                    if param["in"] == "path":
                        url = url.replace("{" + param["name"] + "}", "a%00b")
                    else:
                        query[param["name"]] = "a\x00b"
                    answer = client.request(method.upper(), url, params=query,
                                            headers={"Authorization":
                                                     f"Bearer {world.token(role)}"})
                    tried += 1
                    assert answer.status_code < 500, (method, path, param["name"],
                                                      answer.text[:300])
    assert tried >= 3  # the status filter, a stream's name, the inbox's `before` at least


NUL = "a\x00b"


def _valid_bodies(world: World, inbox_item: str) -> dict[tuple[str, str], Any]:
    """One body each JSON-body operation accepts (2xx) as is, fresh per call (unique
    e-mail, idempotency key)."""
    p, t, c = world.project, world.ticket, world.ids["client"]
    unique = uuid.uuid4().hex[:12]
    when = "2027-01-04T09:00:00Z"
    return {
        ("post", "/api/users"): {"email": f"fz-{unique}@x.test", "role": "client",
                                 "name": "N"},
        ("post", "/api/projects"): {"name": "P", "clientId": c,
                                    "technicianIds": [world.ids["technician"]]},
        ("patch", f"/api/projects/{p}"): {"progress": 10, "status": "active"},
        ("post", "/api/tickets"): {"projectId": p, "subject": "S", "priority": "high"},
        ("patch", f"/api/tickets/{t}"): {"status": "open", "priority": "high"},
        ("post", f"/api/tickets/{t}/messages"): {"message": "M", "clientMessageId": unique},
        ("post", f"/api/projects/{p}/documents"): {"name": "D", "url": "https://x.test/d"},
        ("post", "/api/interventions"): {"projectId": p, "title": "T", "scheduledAt": when,
                                         "notes": "N", "status": "planned"},
        ("patch", f"/api/interventions/{world.intervention}"): {
            "title": "T", "scheduledAt": when, "notes": "N", "status": "scheduled"},
        ("post", "/api/quotes"): {"clientId": c, "projectId": p, "amount": "12.50",
                                  "status": "draft"},
        ("patch", f"/api/quotes/{world.quote}"): {"status": "sent", "amount": "13.00"},
        ("post", "/api/events"): [{"stream": f"project-{p}", "type": "order-paid",
                                   "data": {"k": "v"}, "idempotencyKey": unique}],
        ("post", "/api/notifications"): {"role": "client", "type": "info", "title": "T",
                                         "message": "M"},
        **{("post", f"/api/inbox/{action}"): {"ids": [inbox_item]}
           for action in ("read", "unread", "seen", "archive", "unarchive")},
        ("post", "/api/admin/outbox/retry"): {"streams": [f"project-{p}"]},
    }


def _string_places(value: Any) -> list[tuple[Any, ...]]:
    """Where `value` holds text: the path to each string, and each object key (as
    (..., key, "<key>"))."""
    if isinstance(value, str):
        return [()]
    if isinstance(value, list):
        return [(i, *rest) for i, item in enumerate(value) for rest in _string_places(item)]
    if isinstance(value, dict):
        return [place for key, item in value.items()
                for place in [(key, "<key>"), *((key, *r) for r in _string_places(item))]]
    return []


def _with_nul(value: Any, place: tuple[Any, ...]) -> Any:
    """A copy of `value` with NUL in the string, or the key, at `place`."""
    if not place:
        return NUL
    if place[1:] == ("<key>",) and isinstance(value, dict):
        return {(NUL if k == place[0] else k): v for k, v in value.items()}
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[place[0]] = _with_nul(value[place[0]], place[1:])
    return copy


def test_text_no_database_can_store_in_any_body_field_is_refused_not_a_500(world: World) -> None:
    """NUL in every string and every object key of a body each JSON-body operation of the
    schema accepts, one place at a time: never a 500, and a refusal stores nothing."""
    admin = {"Authorization": f"Bearer {world.token('admin')}"}
    service = {"Authorization": f"Bearer {world.token('service')}"}
    world.api.ok("POST", "/api/notifications",
                 json={"userId": world.ids["admin"], "type": "info", "title": "for the inbox"})
    inbox_item = world.api.ok("GET", "/api/inbox?state=all")["items"][0]["id"]
    spec = httpx.get(f"{world.url}/openapi.json", timeout=10).json()
    with_bodies = {(method, path) for path, operations in spec["paths"].items()
                   for method, operation in operations.items()
                   if "application/json" in operation.get("requestBody", {}).get("content", {})}
    routes = list(_valid_bodies(world, inbox_item))
    tried = 0
    with httpx.Client(base_url=world.url, timeout=20) as client:
        for method, path in sorted(with_bodies):
            if path == "/api/dev/token":  # no text in its body (a user id and a ttl)
                continue
            urls = [url for verb, url in routes if verb == method and _same_route(url, path)]
            assert urls, f"no valid body for {method.upper()} {path}: add one above"
            url = urls[0]
            headers = service if path == "/api/events" else admin
            base = _valid_bodies(world, inbox_item)[(method, url)]
            ok = client.request(method, url, json=base, headers=headers)
            assert ok.status_code < 300, (method, url, ok.text[:300])
            for place in _string_places(base):
                body = _with_nul(_valid_bodies(world, inbox_item)[(method, url)], place)
                before = world.counts()
                answer = client.request(method, url, content=json.dumps(body),
                                        headers={**headers,
                                                 "Content-Type": "application/json"})
                tried += 1
                assert answer.status_code < 500, (method, url, place, answer.text[:300])
                if answer.status_code >= 400:
                    assert world.counts() == before, (method, url, place)
    assert tried >= 40


def _same_route(concrete: str, template: str) -> bool:
    """Whether a URL is the route `template` ({name} segments match any segment)."""
    a, b = concrete.split("/"), template.split("/")
    return len(a) == len(b) and all(y.startswith("{") or x == y
                                    for x, y in zip(a, b, strict=True))
