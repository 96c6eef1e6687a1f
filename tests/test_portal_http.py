"""What the /portal page stands on over HTTP: its files, the development-only demo tokens,
and the reads it loads its state from (with the streams' access rules)."""

from __future__ import annotations

import pytest

from app.portal.auth import decode
from testkit import portalmodules
from testkit.processes import WebNode
from testkit.testrun import SECRET
from testkit.world import World


def test_the_portal_page_its_client_library_and_socketio_client_are_served(world: World
                                                                           ) -> None:
    http = world.api.http
    page = http.get("/portal/")
    assert page.status_code == 200 and '<script type="importmap">' in page.text
    for path in ("/portal/portal.js", "/portal/lib/herald-client/index.js",
                 "/portal/vendor/socket.io-client-4.8.1/socket.io.esm.min.js"):
        response = http.get(path)
        assert response.status_code == 200, path
        assert "javascript" in response.headers["content-type"], path
    assert http.get("/portal", follow_redirects=True).url.path == "/portal/"


def test_every_module_the_portal_loads_resolves_through_its_import_map(world: World) -> None:
    """From portal.js, every import the browser meets (the client's `#socket.io-client`
    included) is relative or in the page's import map, and is served as JavaScript."""
    modules = portalmodules.walk(world.api.http.get)
    assert (modules.unmapped, modules.failed) == ([], [])
    assert set(modules.mapped.values()) <= modules.served  # nothing mapped that is not used
    assert "/portal/lib/herald-client/index.js" in modules.served


def test_the_portal_is_served_with_security_headers(world: World) -> None:
    http = world.api.http
    for path in ("/portal/", "/portal/portal.js", "/portal/lib/herald-client/index.js",
                 "/portal/vendor/socket.io-client-4.8.1/socket.io.esm.min.js"):
        headers = http.get(path).headers
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self' 'sha256-" in policy
        assert "'unsafe-inline'" not in policy, path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path


def test_the_operators_console_is_served_with_security_headers(world: World) -> None:
    for path in ("/ops/", "/ops/ops.js"):
        headers = world.api.http.get(path).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff", path


def test_the_portal_redirect_does_not_reflect_the_host(world: World) -> None:
    response = world.api.http.get("/portal", headers={"Host": "evil.example"})
    assert response.status_code in (301, 302, 307, 308)
    assert response.headers["location"] == "/portal/"


def test_only_javascript_modules_of_the_client_library_are_served(world: World) -> None:
    http = world.api.http
    for path in ("/portal/lib/herald-client/../package.json",
                 "/portal/lib/herald-client/package.json", "/portal/lib/herald-client/x.d.ts"):
        response = http.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def test_demo_users_are_listed_and_a_token_carries_the_users_role_and_email(world: World
                                                                            ) -> None:
    users = world.api.ok("GET", "/api/dev/users", token="")["users"]
    by_id = {user["id"]: user for user in users}
    client = by_id[world.ids["client"]]
    assert client["role"] == "client" and client["email"] == "client@world.test"

    minted = world.api.ok("POST", "/api/dev/token", token="",
                          json={"userId": world.ids["client"], "ttl": 5})
    who = decode(minted["token"], secret=SECRET)
    assert (who.sub, who.role, who.email) == (str(world.ids["client"]), "client",
                                              "client@world.test")
    assert minted["user"] == client
    projects = world.api.ok("GET", "/api/projects", token=minted["token"])["projects"]
    assert [p["id"] for p in projects] == [world.project]


@pytest.mark.parametrize("ttl", [0, -1, 12 * 3600 + 1, "1h"])
def test_a_demo_token_lifetime_outside_one_second_to_twelve_hours_is_refused(
        world: World, ttl: object) -> None:
    response = world.api.request("POST", "/api/dev/token", token="",
                                 json={"userId": world.ids["client"], "ttl": ttl})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize(("user", "status", "code"), [(2**31 - 1, 404, "not_found"),
                                                      (2**31, 422, "invalid")])
def test_a_demo_token_for_an_unknown_or_out_of_range_user_is_refused(
        world: World, user: int, status: int, code: str) -> None:
    response = world.api.request("POST", "/api/dev/token", token="", json={"userId": user})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("env", [
    {"HERALD_ENV": "production"},
    # HERALD_ENV defaults to development: a node given its own key is no demo
    {"HERALD_ENV": "development", "JWT_SECRET": SECRET},
], ids=["production", "development-with-its-own-key"])
def test_demo_tokens_do_not_exist_in_production(world: World, env: dict[str, str]) -> None:
    system = world.system
    node = WebNode({**system.env, **env}, system.log_dir)
    node.start()
    try:
        api = world.api.__class__(node.url, world.token("admin"))
        assert api.request("GET", "/api/dev/users", token="").status_code == 404
        refused = api.request("POST", "/api/dev/token", token="",
                              json={"userId": world.ids["admin"]})
        assert refused.status_code == 404 and "token" not in refused.json()
        assert api.http.get("/portal/").status_code == 200  # the page asks for a token there
        assert "/api/dev/users" not in api.http.get("/openapi.json").text
        api.close()
    finally:
        node.stop()


def test_each_role_lists_only_the_projects_it_may_read(world: World) -> None:
    def listed(role: str) -> list[int]:
        response = world.api.ok("GET", "/api/projects", token=world.token(role))
        return [p["id"] for p in response["projects"]]

    assert listed("client") == [world.project]
    assert listed("technician") == [world.project]
    assert world.project not in listed("other-client")
    assert world.project not in listed("other-technician")
    assert len(listed("other-client")) == 1
    assert world.project in listed("admin") and len(listed("admin")) == 2
    refused = world.api.request("GET", "/api/projects", token=world.token("service"))
    assert refused.status_code == 403


def test_tickets_and_chat_history_are_read_by_project_members_only(world: World) -> None:
    ticket = world.fresh_ticket()
    world.api.ok("POST", f"/api/tickets/{ticket}/messages", token=world.token("client"),
                 json={"message": "first"})
    world.api.ok("POST", f"/api/tickets/{ticket}/messages", token=world.token("technician"),
                 json={"message": "second"})

    tickets = world.api.ok("GET", f"/api/projects/{world.project}/tickets",
                           token=world.token("client"))["tickets"]
    assert ticket in [t["id"] for t in tickets]
    history = world.api.ok("GET", f"/api/tickets/{ticket}/messages?limit=1",
                           token=world.token("technician"))["messages"]
    assert [m["message"] for m in history] == ["second"]  # the last `limit`, oldest first
    [message] = history
    assert set(message) == {"ticketId", "messageId", "message", "author", "createdAt"}
    assert message["author"] == {"id": world.ids["technician"],
                                 "email": "technician@world.test", "name": "technician"}
    for path in (f"/api/projects/{world.project}/tickets", f"/api/tickets/{ticket}/messages"):
        response = world.api.request("GET", path, token=world.token("other-client"))
        assert response.status_code == 404, path  # what they may not see: as if unknown
    assert world.api.request("GET", "/api/tickets/999999/messages").status_code == 404
    for path in ("/api/tickets/2147483648/messages", "/api/projects/2147483648/tickets"):
        assert world.api.request("GET", path).status_code == 422, path


def test_a_projects_tickets_are_read_as_the_last_limit_oldest_first(world: World) -> None:
    made = [world.fresh_ticket() for _ in range(3)]
    tickets = world.api.ok("GET", f"/api/projects/{world.project}/tickets?limit=2",
                           token=world.token("client"))["tickets"]
    assert [t["id"] for t in tickets] == made[1:]
    for bad in ("0", "501", "x"):
        response = world.api.request("GET", f"/api/projects/{world.project}/tickets?limit={bad}",
                                     token=world.token("client"))
        assert response.status_code == 422, bad
        assert "limit" in response.json()["error"]["message"], bad
