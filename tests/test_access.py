"""Who may reach what: every API endpoint and admin page, for each kind of caller.

One table per surface. For each endpoint: anonymous callers, mallory (signed in, no
rights) and the right user; then tokens (wrong, revoked, another user's), CSRF on
session requests, and nobody approving their own rollback request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from swaps import rollbacks, tokens
from swaps.models import AuditEntry, ServedModel

from .control_plane import APPROVER, OPERATOR, client_for, make_user, post_json

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {swap} and {request} are filled in from the `world` fixture
    right_user: str  # who may: alice (operator), bob (approver), or "anyone" signed in
    ok: int
    body: dict | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


VERSION_BODY = {
    "version": "9",
    "runtime": "python",
    "artifact": "tests.fleet_models:gated",
    "sample_input": [[0.0]],
    "expected_output_shape": [-1, 1],
    "expected_output_dtype": "FP32",
    "memory_limit_bytes": 256 * 1024 * 1024,
    "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 1]}],
}

API = [
    Endpoint("GET", "/api/models", "anyone", 200),
    Endpoint("GET", "/api/models/iris", "anyone", 200),
    Endpoint("GET", "/api/models/iris/status", "anyone", 200),
    Endpoint("GET", "/api/swaps/{swap}", "anyone", 200),
    Endpoint("GET", "/api/rollbacks/{request}", "anyone", 200),
    Endpoint("POST", "/api/models/iris/versions", "alice", 201, VERSION_BODY),
    Endpoint(
        "POST", "/api/models/iris/swaps", "alice", 202, {"from_version": "2", "to_version": "3"}
    ),
    Endpoint(
        "POST", "/api/models/iris/rollbacks", "alice", 202, {"target_version": "1", "reason": "x"}
    ),
    Endpoint("POST", "/api/rollbacks/{request}/approve", "bob", 202),
    Endpoint("POST", "/api/rollbacks/{request}/reject", "bob", 200),
]
CHANGES = [e for e in API if e.method == "POST"]

ADMIN_MODELS = ["servedmodel", "modelversion", "swap", "rollbackrequest", "auditentry", "apitoken"]
ADMIN_PAGES = [
    "/admin/",
    *(f"/admin/swaps/{name}/" for name in ADMIN_MODELS),
    *(f"/admin/swaps/{name}/{{{name}}}/change/" for name in ADMIN_MODELS),
    "/admin/django_rq/",
]


@pytest.fixture
def world(alice, bob, served_before) -> dict[str, int]:
    """iris 2 serving (1 before), approval-gated, with alice's rollback request waiting."""
    ServedModel.objects.filter(name="iris").update(rollback_requires_approval=True)
    request = rollbacks.request_rollback(
        model="iris", target_version="1", reason="answers wrong", user=alice, via="test"
    )
    token, _ = tokens.create_api_token(user=alice, name="ci", via="test")
    iris = ServedModel.objects.get(name="iris")
    return {
        "swap": iris.swaps.get().pk,
        "request": request.pk,
        "servedmodel": iris.pk,
        "modelversion": iris.active_version_id,
        "rollbackrequest": request.pk,
        "auditentry": AuditEntry.objects.first().pk,
        "apitoken": token.pk,
    }


def call(client: Client, endpoint: Endpoint, world: dict[str, int], **headers):
    path = endpoint.path.format(**world)
    if endpoint.method == "GET":
        return client.get(path, **headers)
    return post_json(client, path, endpoint.body, **headers)


def user_named(name: str, alice: User, bob: User) -> User:
    return {"alice": alice, "bob": bob, "anyone": alice}[name]


@pytest.mark.parametrize("endpoint", API, ids=str)
def test_anonymous_callers_get_401(endpoint, world):
    response = call(Client(), endpoint, world)

    assert (response.status_code, bool(response.json()["error"])) == (401, True)


@pytest.mark.parametrize("endpoint", CHANGES, ids=str)
def test_mallory_gets_403_naming_the_permission(endpoint, world, mallory):
    response = call(client_for(mallory), endpoint, world)

    assert response.status_code == 403
    assert "permission" in response.json()["error"]


@pytest.mark.parametrize("endpoint", API, ids=str)
def test_the_right_user_gets_through(endpoint, world, alice, bob):
    response = call(client_for(user_named(endpoint.right_user, alice, bob)), endpoint, world)

    assert response.status_code == endpoint.ok, response.json()


@pytest.mark.parametrize("endpoint", API, ids=str)
def test_a_wrong_token_gets_401(endpoint, world):
    response = call(Client(), endpoint, world, HTTP_AUTHORIZATION="Bearer hs_not-a-real-token")

    assert response.status_code == 401


@pytest.mark.parametrize("endpoint", API, ids=str)
def test_a_revoked_token_gets_401(endpoint, world, alice, bob):
    owner = user_named(endpoint.right_user, alice, bob)
    token, secret = tokens.create_api_token(user=owner, name="old", via="test")
    tokens.revoke_api_token(token=token, user=owner, via="test")

    response = call(Client(), endpoint, world, HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert response.status_code == 401


@pytest.mark.parametrize("endpoint", API, ids=str)
def test_the_right_users_token_gets_through(endpoint, world, alice, bob):
    _, secret = tokens.create_api_token(
        user=user_named(endpoint.right_user, alice, bob), name="ci", via="test"
    )

    response = call(Client(), endpoint, world, HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert response.status_code == endpoint.ok, response.json()


@pytest.mark.parametrize("endpoint", CHANGES, ids=str)
def test_another_users_token_acts_only_as_that_user(endpoint, world, mallory):
    _, secret = tokens.create_api_token(user=mallory, name="mallory's", via="test")

    response = call(Client(), endpoint, world, HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert response.status_code == 403
    assert response.json()["error"].startswith("mallory may not")


@pytest.mark.parametrize("endpoint", CHANGES, ids=str)
def test_a_session_change_without_the_csrf_token_gets_403(endpoint, world, alice, bob):
    client = client_for(user_named(endpoint.right_user, alice, bob), csrf_checks=True)

    response = call(client, endpoint, world)

    assert response.status_code == 403
    assert response.json()["error"].startswith("CSRF check failed")


@pytest.mark.parametrize("endpoint", CHANGES, ids=str)
def test_a_session_change_with_the_csrf_token_gets_through(endpoint, world, alice, bob):
    client = client_for(user_named(endpoint.right_user, alice, bob), csrf_checks=True)
    client.get("/admin/login/")  # any page that sets the csrftoken cookie
    token = client.cookies["csrftoken"].value

    response = call(client, endpoint, world, HTTP_X_CSRFTOKEN=token)

    assert response.status_code == endpoint.ok, response.json()


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_nobody_decides_their_own_rollback_request(decision, world, alice, bob):
    own = rollbacks.request_rollback(
        model="iris", target_version="1", reason="mine", user=bob, via="test"
    )

    response = post_json(client_for(bob), f"/api/rollbacks/{own.pk}/{decision}")

    assert response.status_code == 403
    assert response.json()["error"] == rollbacks.OWN_REQUEST


# -- the admin site -------------------------------------------------------------------------


def staff(username: str, *, codenames: tuple[str, ...] = ()) -> User:
    user = make_user(username, codenames)
    User.objects.filter(pk=user.pk).update(is_staff=True)
    return User.objects.get(pk=user.pk)


@pytest.fixture
def viewer(db) -> User:
    """Staff who may view every swaps record: what an operator's admin account holds."""
    user = staff("vera")
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="swaps", codename__startswith="view_")
    )
    return User.objects.get(pk=user.pk)


@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_anonymous_visitors_are_sent_to_the_admin_login(page, world):
    response = Client().get(page.format(**world))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_users_who_are_not_staff_are_sent_to_the_admin_login(page, world, alice):
    response = client_for(alice).get(page.format(**world))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("page", [p for p in ADMIN_PAGES if p.startswith("/admin/swaps/")])
def test_staff_without_the_view_permission_get_403(page, world):
    response = client_for(staff("sam", codenames=OPERATOR + APPROVER)).get(page.format(**world))

    assert response.status_code == 403


@pytest.mark.parametrize("page", [p for p in ADMIN_PAGES if p.startswith("/admin/swaps/")])
def test_staff_with_the_view_permission_see_the_page(page, world, viewer):
    assert client_for(viewer).get(page.format(**world)).status_code == 200


def test_the_rq_dashboard_is_for_superusers_only(world, viewer):
    root = User.objects.create_superuser(
        "root", "root@example.com", None, last_login=timezone.now()
    )

    statuses = [client_for(u).get("/admin/django_rq/").status_code for u in (viewer, root)]

    assert statuses[1] == 200 and statuses[0] != 200


# -- the console (pages, forms, websockets) -------------------------------------------------


@dataclass(frozen=True)
class Page:
    method: str
    path: str
    right_user: str
    body: dict | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


CONSOLE = [
    Page("GET", "/", "anyone"),
    Page("GET", "/models/iris/", "anyone"),
    Page("GET", "/approvals/", "bob"),
    Page("POST", "/models/iris/swap", "alice", {"from_version": "2", "to_version": "3"}),
    Page("POST", "/models/iris/rollback", "alice", {"target_version": "1", "reason": "x"}),
    Page("POST", "/rollbacks/{request}/approve", "bob", {}),
    Page("POST", "/rollbacks/{request}/reject", "bob", {}),
]
FORMS = [p for p in CONSOLE if p.method == "POST"]
GUARDED = [p for p in CONSOLE if p.right_user != "anyone"]


def visit(client: Client, page: Page, world: dict[str, int], **headers):
    path = page.path.format(**world)
    if page.method == "GET":
        return client.get(path, **headers)
    return client.post(path, page.body, **headers)


@pytest.mark.parametrize("page", CONSOLE, ids=str)
def test_anonymous_visitors_of_the_console_are_sent_to_log_in(page, world):
    response = visit(Client(), page, world)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("page", GUARDED, ids=str)
def test_mallory_is_refused_by_the_console_with_403(page, world, mallory):
    response = visit(client_for(mallory), page, world)

    assert response.status_code == 403
    assert b"permission" in response.content


@pytest.mark.parametrize("page", CONSOLE, ids=str)
def test_the_right_user_gets_through_the_console(page, world, alice, bob):
    response = visit(client_for(user_named(page.right_user, alice, bob)), page, world)

    assert response.status_code in (200, 302)
    if response.status_code == 302:  # a form's redirect after success: back to its page
        assert not response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("page", FORMS, ids=str)
def test_a_console_form_without_the_csrf_token_gets_403(page, world, alice, bob):
    client = client_for(user_named(page.right_user, alice, bob), csrf_checks=True)

    assert visit(client, page, world).status_code == 403


@pytest.mark.parametrize("page", FORMS, ids=str)
def test_a_console_form_with_the_csrf_token_gets_through(page, world, alice, bob):
    client = client_for(user_named(page.right_user, alice, bob), csrf_checks=True)
    client.get("/admin/login/")
    token = client.cookies["csrftoken"].value

    response = visit(client, page, world, HTTP_X_CSRFTOKEN=token)

    assert response.status_code in (200, 302)


def test_nobody_approves_their_own_request_in_the_console(world, bob):
    own = rollbacks.request_rollback(
        model="iris", target_version="1", reason="mine", user=bob, via="test"
    )

    response = client_for(bob).post(f"/rollbacks/{own.pk}/approve")

    assert response.status_code == 403
    assert rollbacks.OWN_REQUEST.encode() in response.content.replace(b"&#x27;", b"'")


WEBSOCKETS = ["/ws/dashboard/", "/ws/models/iris/"]


async def connects(path: str, user: User | None) -> bool:
    from channels.testing import WebsocketCommunicator

    from hotswap_site.asgi import application

    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost")]
    if user is not None:
        client = await sync_to_async(client_for)(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    socket = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await socket.connect()
    if connected:
        await socket.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", WEBSOCKETS)
async def test_an_anonymous_websocket_is_refused(path, iris):
    assert await connects(path, None) is False


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", WEBSOCKETS)
async def test_a_user_without_rights_may_watch_over_a_websocket(path, iris, mallory):
    # Watching is all a console socket does (like the pages anyone signed in may see);
    # tests/test_consumers.py shows that what a socket sends changes nothing.
    assert await connects(path, mallory) is True


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", WEBSOCKETS)
async def test_the_right_user_may_watch_over_a_websocket(path, iris, alice):
    assert await connects(path, alice) is True


# -- what the console shows each viewer ---------------------------------------------------------


def test_the_console_hides_from_each_viewer_the_controls_they_may_not_use(client):
    make_user("mallory")
    client.force_login(User.objects.get(username="mallory"))

    style = client.get("/").context["viewer_style"]

    for control in ("start-swap", "request-rollback", "approve-rollback"):
        assert f".may-{control}{{display:none}}.may-not-{control}{{display:block}}" in style


def test_an_approver_is_shown_no_decision_on_their_own_requests(client):
    client.force_login(make_user("bob", APPROVER))

    style = client.get("/").context["viewer_style"]

    assert '[data-requested-by="bob"] .may-approve-rollback{display:none}' in style
    assert ".may-approve-rollback{display:none}.may-not" not in style


def test_a_username_that_is_not_plain_never_reaches_the_style(client):
    # Created past the username validator (as a script or another backend could).
    odd = make_user('x"]{}*{display:none}', APPROVER)
    client.force_login(odd)

    page = client.get("/").content.decode()
    style = re.split(r'<style id="viewer-style" nonce="[\w-]+">', page, maxsplit=1)[1]
    style = style.split("</style>", 1)[0]

    assert "requested-by" not in style and "*" not in style
    assert style  # the rules that need no username are still there
