"""The ops console in a real headless Chromium, against the real thing.

A daphne console, an RQ worker and a replica run as processes on the test database and
a Redis namespace and RQ queue of this module's (tests/browser/conftest.py); the
console's channel layer is Redis, so what the worker and the console broadcast reaches
the browser as in production. Screenshots go to test-output/screenshots/.

Live changes are recorded in the page by a MutationObserver (an init script), so a
state that lasts only a few milliseconds is still seen, and a reload would show (it
starts the record afresh).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

import httpx
import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from swaps import fleet_state, notify
from swaps.audit import audit as write_audit
from swaps.channel_layer import SealedChannelLayer
from swaps.console import AUDIT_LENGTH
from swaps.models import AuditEntry, ServedModel
from tests.fleet_models import gated_spec

from ..chromium import chromium
from ..control_plane import APPROVER, OPERATOR, add_version, make_user
from ..live import Held
from ..live_fleet import answer, serve
from ..processes import ROOT, start_replica, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

T = TypeVar("T")
SCREENSHOTS = ROOT / "test-output" / "screenshots"
PASSWORD = "correct horse battery staple"
WAIT_MS = 90_000

RECORDER = """
window.__record = {states: [], pendingWhileDraining: false, disagreements: []};
new MutationObserver(() => {
  const state = document.querySelector('[id^="swap-state-"]');
  const record = window.__record;
  if (state && record.states[record.states.length - 1] !== state.dataset.state) {
    record.states.push(state.dataset.state);
  }
  // The card and the history beside it, on the same operation, must say the same.
  const entry = document.querySelector('[id^="history-"] .timeline > li');
  if (state && entry && entry.dataset.swap === state.dataset.swap) {
    const rows = entry.querySelectorAll(".transitions > li");
    const card = state.dataset.state;
    const last = rows.length ? rows[rows.length - 1].dataset.state : "";
    if (entry.dataset.state !== card || last !== card) {
      record.disagreements.push(`card ${card}, history ${entry.dataset.state}/${last}`);
    }
  }
  const old = document.querySelector('[id^="pending-"] tr[data-version="1"] .inflight');
  if (state && state.dataset.state === "draining" && old && Number(old.dataset.inflight) > 0) {
    record.pendingWhileDraining = true;
  }
}).observe(document, {childList: true, subtree: true});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with chromium() as started:
        yield started


def operator(username: str, permissions: tuple[str, ...]) -> User:
    user = make_user(username, permissions)
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.fixture
def alice(db) -> User:
    """An operator who may also approve (others' requests)."""
    return operator("alice", OPERATOR + APPROVER)


@pytest.fixture
def bob(db) -> User:
    return operator("bob", APPROVER)


def off_the_loop(function: Callable[[], T]) -> T:
    """Run `function` on a thread of its own: Playwright's loop runs in this one, and
    asgiref's async_to_sync (the control plane's way to the fleet) refuses to run there."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(function).result()


@pytest.fixture
def held_model(replica, db) -> ServedModel:
    """held 1 serving, 2 registered: a request to it sleeps for its input, in seconds."""
    specs = [gated_spec(version="1"), gated_spec(version="2")]
    return off_the_loop(lambda: serve("held", specs, replica))


@pytest.fixture
def rolled_forward(replica, db) -> ServedModel:
    """held 2 serving after 1 (a rollback target); rollbacks need approval."""
    return off_the_loop(lambda: _rolled_forward(replica))


def _rolled_forward(replica) -> ServedModel:
    served = ServedModel.objects.create(name="held", rollback_requires_approval=True)
    before = timezone.now() - timezone.timedelta(minutes=5)
    add_version(served, gated_spec(version="1"), first_served_at=before)
    served.active_version = add_version(
        served, gated_spec(version="2"), first_served_at=timezone.now()
    )
    served.save()
    fleet_state.republish_from_database()
    wait_until(lambda: answer(replica, "held").get("model_version") == "2", timeout=60, what="2")
    return served


def signed_in(browser: Browser, console, user: User, *, width: int = 1280) -> Page:
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    page.add_init_script(RECORDER)
    record_errors(page)
    page.goto(f"{console.url}/accounts/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{console.url}/")
    return page


def record_errors(page: Page) -> None:
    """Keep what the browser logs as an error (a failed load, htmx's oobErrorNoTarget for
    a pushed fragment the page has no place for, an exception) in `page.errors`."""
    page.errors = []
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.on("pageerror", lambda error: page.errors.append(str(error)))


# Counts the websocket's messages; the first one on a connection is its snapshot.
MESSAGES = """
window.__wsMessages = 0;
document.addEventListener("htmx:wsAfterMessage", () => { window.__wsMessages += 1; });
"""


def open_live(page: Page, url: str) -> Page:
    """Open `url` and wait until its websocket delivered the page's snapshot: pushes
    arrive from then on, and a control used now is not replaced under the test's hand
    (a snapshot landing after a select_option put the form back to its first option)."""
    page.add_init_script(MESSAGES)
    page.goto(url)
    page.evaluate("window.__document = 'first'")
    expect(page.locator("[ws-connect]")).to_have_count(1)
    page.wait_for_function("() => window.__wsMessages > 0", timeout=WAIT_MS)
    return page


def start_swap_in(page: Page) -> None:
    page.get_by_label("To version").select_option("2")
    page.get_by_role("button", name="Start swap").click()


def version_1_row(page: Page):
    return page.locator('[id="pending-held"] tr[data-version="1"]')


def inflight_on_version_1(page: Page):
    return version_1_row(page).locator(".inflight")


def test_a_swap_shows_swapping_draining_and_completed_without_a_reload(
    browser, console, worker, replica, held_model, alice
):
    page = open_live(signed_in(browser, console, alice), f"{console.url}/models/held/")
    held = Held(replica)
    expect(inflight_on_version_1(page)).to_have_attribute("data-inflight", "1", timeout=WAIT_MS)

    start_swap_in(page)
    expect(page.locator("#swap-state-held")).to_have_attribute(
        "data-state", "draining", timeout=WAIT_MS
    )
    # No second swap is offered while this one runs (the server would refuse it).
    expect(page.locator("#swap-form-held")).to_contain_text("is under way", timeout=WAIT_MS)
    expect(page.get_by_role("button", name="Start swap")).to_have_count(0)
    held.release()

    expect(page.locator("#swap-state-held")).to_have_attribute(
        "data-state", "completed", timeout=WAIT_MS
    )
    expect(page.get_by_role("button", name="Start swap")).to_be_visible(timeout=WAIT_MS)
    states = page.evaluate("window.__record.states")
    assert [s for s in states if s in ("swapping", "draining", "completed")][-3:] == [
        "swapping",
        "draining",
        "completed",
    ], states
    # At no moment did the history say another state than the card beside it.
    assert page.evaluate("window.__record.disagreements") == []
    assert page.evaluate("window.__document") == "first"  # never reloaded


def test_the_old_versions_pending_count_counts_down_to_zero_on_the_dashboard(
    browser, console, worker, replica, held_model, alice
):
    operator_page = open_live(signed_in(browser, console, alice), f"{console.url}/models/held/")
    dashboard = open_live(signed_in(browser, console, alice), f"{console.url}/")
    held = Held(replica)
    expect(inflight_on_version_1(dashboard)).to_have_attribute(
        "data-inflight", "1", timeout=WAIT_MS
    )

    start_swap_in(operator_page)

    dashboard.wait_for_function("() => window.__record.pendingWhileDraining", timeout=WAIT_MS)
    expect(version_1_row(dashboard).locator(".role")).to_have_text("draining", timeout=WAIT_MS)
    dashboard.screenshot(path=SCREENSHOTS / "dashboard-mid-drain.png", full_page=True)
    held.release()
    expect(dashboard.locator("#swap-state-held")).to_have_attribute(
        "data-state", "completed", timeout=WAIT_MS
    )
    expect(inflight_on_version_1(dashboard)).to_have_attribute(
        "data-inflight", "0", timeout=WAIT_MS
    )
    dashboard.screenshot(path=SCREENSHOTS / "dashboard-completed.png", full_page=True)
    assert held.outcome()["model_version"] == "1"  # the draining request was never cut off


def test_a_rollback_needs_a_second_users_approval_and_then_changes_the_served_version(
    browser, console, worker, replica, rolled_forward, alice, bob
):
    model_page = open_live(signed_in(browser, console, alice), f"{console.url}/models/held/")
    model_page.get_by_label("Reason").fill("version 2 answers too slowly")
    model_page.get_by_role("button", name="Roll back to 1").click()
    expect(model_page.locator("#rollback-held")).to_contain_text("waiting for approval")
    # The push of the new request lands while the form waits for its answer: the answer
    # (its notice) must still reach the section, and the reason must not be reused.
    expect(model_page.locator("#rollback-held .notice")).to_contain_text("requested")
    expect(model_page.get_by_label("Reason")).to_have_value("")

    # Alice may approve, but not her own request: she is told so, not offered buttons.
    own_page = model_page.context.new_page()
    record_errors(own_page)
    own_queue = open_live(own_page, f"{console.url}/approvals/")
    expect(own_queue.get_by_text("Your own request")).to_be_visible()
    expect(own_queue.get_by_role("button", name="Approve rollback request")).to_be_hidden()

    queue = open_live(signed_in(browser, console, bob), f"{console.url}/approvals/")
    queue.get_by_role("button", name="Approve rollback").click()

    expect(model_page.locator("#swap-state-held [data-served]")).to_have_attribute(
        "data-served", "1", timeout=WAIT_MS
    )
    serving_tag = model_page.locator("#versions-held th:has(.tag)")
    expect(serving_tag).to_have_text("1 serving", timeout=WAIT_MS)  # no reload needed
    model_page.screenshot(path=SCREENSHOTS / "model-after-rollback.png", full_page=True)
    assert answer(replica, "held")["model_version"] == "1"
    # Through the request, its approval and the rollback, each page was pushed only what
    # it has a place for, and loaded everything it asked for (its favicon too).
    assert {"model": model_page.errors, "queue": queue.errors, "own": own_queue.errors} == {
        "model": [],
        "queue": [],
        "own": [],
    }


def test_a_swap_breaking_clients_fails_on_the_page_saying_why_and_no_retired_version_is_offered(
    browser, console, worker, replica, held_model, alice
):
    renamed = (replace(gated_spec().outputs[0], name="answer"),)
    off_the_loop(lambda: add_version(held_model, replace(gated_spec(version="3"), outputs=renamed)))
    retired = {"retired_at": timezone.now()}
    off_the_loop(lambda: add_version(held_model, gated_spec(version="4"), **retired))
    unhealthy = replace(gated_spec(version="5"), expected_output_dtype="INT64")
    off_the_loop(lambda: add_version(held_model, unhealthy))
    page = open_live(signed_in(browser, console, alice), f"{console.url}/models/held/")
    options = page.locator("#to-version-held option")
    expect(options).to_have_count(3)  # 2, 3 and 5; 4 is retired
    assert options.evaluate_all("os => os.map(o => o.value)") == ["2", "3", "5"]

    def swap_to(version: str) -> None:
        page.get_by_label("To version").select_option(version)
        page.get_by_role("button", name="Start swap").click()

    swap_to("3")

    card = page.locator("#swap-state-held")
    expect(card).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
    swap_id = card.get_attribute("data-swap")
    expect(card).to_contain_text("would break the clients of version '1'")
    expect(card).to_contain_text("output 'output-0', which clients read, is not one it gives")
    expect(card.locator("[data-served]")).to_have_attribute("data-served", "1")
    history = page.locator("#history-held .timeline > li").first
    expect(history).to_have_attribute("data-state", "failed")
    page.screenshot(path=SCREENSHOTS / "model-refused-swap.png", full_page=True)

    # A target whose health check fails: the check's result, per replica, is on the page.
    swap_to("5")
    expect(history).to_have_attribute("data-swap", str(int(swap_id) + 1), timeout=WAIT_MS)
    expect(history).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
    expect(card).to_contain_text("health check", timeout=WAIT_MS)
    checked = page.locator('#versions-held tr:has(th:text-is("5"))')
    expect(checked).to_contain_text(f"Unhealthy on {replica.replica_id}", timeout=WAIT_MS)
    page.screenshot(path=SCREENSHOTS / "model-unhealthy-target.png", full_page=True)
    assert answer(replica, "held")["model_version"] == "1"
    assert page.evaluate("window.__record.disagreements") == []


def test_a_version_picked_in_the_swap_form_stays_picked_when_a_push_renders_the_form(
    browser, console, held_model, alice, live_settings
):
    off_the_loop(lambda: add_version(held_model, gated_spec(version="3")))
    page = open_live(signed_in(browser, console, alice), f"{console.url}/models/held/")
    page.get_by_label("To version").select_option("3")
    page.get_by_text("Swap even if it would break the clients of version 1").click()
    page.get_by_label("Why (on the record and in the audit log)").fill("clients moved")
    page.evaluate("document.getElementById('swap-form-held').dataset.before = 'push'")

    # Any change of the model re-renders its form: here, a rollback request's.
    change = {"type": notify.EVENT, "record": "rollback_request", "id": 0, "model": "held"}
    announce_to_the_console(live_settings, change)
    page.wait_for_function(
        "() => document.getElementById('swap-form-held').dataset.before === undefined",
        timeout=WAIT_MS,
    )

    expect(page.get_by_label("To version")).to_have_value("3")
    expect(page.locator("#force-choice-held")).to_have_attribute("open", "")  # still open
    expect(page.get_by_label("Why (on the record and in the audit log)")).to_have_value(
        "clients moved"
    )


def announce_to_the_console(settings, event: dict) -> None:
    """Send `event` to the console processes of this test's namespace, as a change does."""
    layer = SealedChannelLayer(
        hosts=[settings.REDIS_URL],
        prefix=f"{settings.HOTSWAP_NAMESPACE}:asgi",
        symmetric_encryption_keys=[settings.SECRET_KEY],
    )

    async def send() -> None:
        try:
            await layer.group_send(notify.CHANGES, event)
        finally:
            await layer.close_pools()

    off_the_loop(lambda: asyncio.run(send()))


def test_requests_that_fail_are_shown_as_errors_of_their_version_and_never_as_served(
    browser, console, replica, held_model, alice
):
    page = open_live(signed_in(browser, console, alice), f"{console.url}/models/held/")
    row = version_1_row(page)
    # FP64 where version 1 takes FP32: each is refused (400) by the replica.
    wrong = {"inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "FP64", "data": [0]}]}
    refused, stop = [], threading.Event()

    def send() -> None:
        with httpx.Client(base_url=replica.url, timeout=30) as client:
            while not stop.is_set():
                refused.append(client.post("/v2/models/held/infer", json=wrong).status_code)
                stop.wait(0.05)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        expect(row.locator(".error-rate.failing")).to_be_visible(timeout=WAIT_MS)
        served_while_failing = row.locator(".served").get_attribute("data-rate")
    finally:
        stop.set()
        sender.join(30)

    assert refused and set(refused) == {400}
    assert served_while_failing == "0.000"
    page.screenshot(path=SCREENSHOTS / "model-errors.png", full_page=True)


def test_the_dashboard_shows_a_replica_join_and_leave_the_fleet(
    browser, console, replica, held_model, alice, live_settings, redis_url, tmp_path
):
    page = open_live(signed_in(browser, console, alice), f"{console.url}/")
    listed = page.locator("#replicas tr[data-replica]")
    first = page.locator(f'#replicas tr[data-replica="{replica.replica_id}"]')
    expect(first).to_contain_text("held 1", timeout=WAIT_MS)

    namespace = live_settings.HOTSWAP_NAMESPACE
    second = start_replica(namespace=namespace, redis_url=redis_url, log_dir=tmp_path)
    try:
        joined = page.locator(f'#replicas tr[data-replica="{second.replica_id}"]')
        expect(joined).to_contain_text(second.url.removeprefix("http://"), timeout=WAIT_MS)
        expect(listed).to_have_count(2)
        page.screenshot(path=SCREENSHOTS / "dashboard-replicas.png", full_page=True)
        second.kill()  # no goodbye: its heartbeat just stops
        expect(joined).to_have_count(0, timeout=WAIT_MS)
    finally:
        second.stop()
    expect(listed).to_have_count(1)
    expect(first).to_be_visible()


def test_a_viewer_without_permissions_is_shown_no_controls_but_what_they_need(
    browser, console, held_model, alice
):
    carol = operator("carol", ())  # signed in, may look, may change nothing
    page = open_live(signed_in(browser, console, carol), f"{console.url}/models/held/")

    expect(page.get_by_role("button", name="Start swap")).to_be_hidden()
    expect(page.get_by_text("needs the start_swap permission")).to_be_visible()
    # The same page for alice, who may swap: the pushed fragments are the same for both.
    alices = open_live(signed_in(browser, console, alice), f"{console.url}/models/held/")
    expect(alices.get_by_role("button", name="Start swap")).to_be_visible()
    expect(alices.get_by_text("needs the start_swap permission")).to_be_hidden()


def test_the_dashboard_reads_on_a_phone(browser, console, held_model, alice):
    page = open_live(signed_in(browser, console, alice, width=360), f"{console.url}/")
    expect(page.locator("#pending-held table")).to_be_visible(timeout=WAIT_MS)

    page.screenshot(path=SCREENSHOTS / "dashboard-phone.png", full_page=True)
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= 360  # nothing forces sideways scrolling


@pytest.mark.parametrize("width", [1280, 390])
def test_the_model_pages_tables_fit_and_older_entries_are_a_page_away(
    browser, console, held_model, alice, width
):
    refusal = "version '2' of model 'held' would break the clients of version '1': " + "x" * 300

    def refusals() -> None:  # through the log's one writer: each entry joins the chain
        for n in range(45):
            write_audit(
                actor="alice",
                via="api",
                action="start_swap",
                model="held",
                from_version="1",
                to_version="2",
                outcome="refused",
                details={"error": f"{refusal} ({n})"},
            )

    off_the_loop(refusals)
    page = open_live(signed_in(browser, console, alice, width=width), f"{console.url}/models/held/")
    page.screenshot(path=SCREENSHOTS / f"model-{width}.png", full_page=True)

    audit = page.locator("#audit-held")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert audit.locator(".scroll").evaluate("e => e.scrollWidth <= e.clientWidth")
    audit.get_by_role("link", name="Older entries").click()
    expect(page.get_by_role("heading", name="Model held: audit log")).to_be_visible()
    entries = off_the_loop(lambda: AuditEntry.objects.filter(model="held").count())
    pages = -(-entries // AUDIT_LENGTH)
    expect(page.locator("#audit-held .pager")).to_contain_text(f"page 2 of {pages}")
