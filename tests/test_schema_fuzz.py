"""Schemathesis over the web node's own /openapi.json: no input the schema admits, or nearly
admits, gets a 500. Bounded: a few examples per operation, against a real web node; and
text no database can store (NUL) in every string parameter, every run.

(Schemathesis's pytest plugin is not used: its lazy fixtures break on this pytest; its
per-operation Hypothesis strategies are. Its OpenAPI modules are imported at collection,
not lazily mid-suite: pytest rewrites them on first import, and that once failed in a
full run with "AST constructor recursion depth mismatch", a CPython 3.11 fault of the
AST builder seen when threads run (python/cpython#106905); at collection none do.)
"""

from __future__ import annotations

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
