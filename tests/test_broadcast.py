"""broadcast.py: each change becomes the fragments the page swaps in, sent to who watches."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync

from swaps import broadcast, lifecycle, notify, rollbacks, swapping
from swaps.broadcast import APPROVALS, DASHBOARD, Changes
from swaps.models import ServedModel, Swap

# Rendering reads the database on a worker thread, as the console does.
pytestmark = pytest.mark.django_db(transaction=True)


class Watching:
    """A socket of this process watching `page`: what it was sent, in order."""

    def __init__(self, page: broadcast.Page) -> None:
        self.page = page
        self.frames: list[str] = []
        broadcast.watchers.add(page, self.push)

    async def push(self, text: str) -> None:
        self.frames.append(text)

    def close(self) -> None:
        broadcast.watchers.discard(self.page, self.push)


@pytest.fixture
def watch():
    sockets: list[Watching] = []

    def watching(page: broadcast.Page) -> Watching:
        sockets.append(Watching(page))
        return sockets[-1]

    yield watching
    for socket in sockets:
        socket.close()


def render(changes: Changes) -> list[str]:
    """Render `changes`; return the order of what happened ("states sent" included)."""
    events: list[str] = []

    async def render_both() -> None:
        await broadcast.render_states(changes, states_sent=lambda: events.append("states sent"))
        await broadcast.render_rest(changes)

    async_to_sync(render_both)()
    return events


def changed(*swaps) -> Changes:
    """The burst of announcements of these swap records, as they stand."""
    changes = Changes()
    for swap in swaps:
        changes.add(notify.swap_event(swap))
    return changes


def changed_by(*events) -> Changes:
    changes = Changes()
    for event in events:
        changes.add(event)
    return changes


@pytest.fixture
def swap(alice, candidate_version):
    return swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")


def test_a_swap_change_sends_the_state_with_the_latest_swaps_then_the_rest(swap, watch):
    dashboard = watch(DASHBOARD)

    render(changed(swap))

    first, second = dashboard.frames
    assert 'id="swap-state-iris"' in first and 'id="latest-swaps"' in first
    assert 'id="latest-swaps"' in second


def test_the_latest_swaps_beside_a_state_show_the_state_the_card_shows(swap, watch):
    dashboard = watch(DASHBOARD)
    announced = notify.swap_event(swap)  # pending
    Swap.objects.filter(pk=swap.pk).update(state=Swap.State.SWAPPING)  # the record moved on

    render(changed_by(announced))

    first = dashboard.frames[0]
    card, table = first.split('id="latest-swaps"', 1)
    assert 'data-state="pending"' in card
    assert "state-pending" in table and "state-swapping" not in table


def test_a_swap_change_sends_the_history_with_the_state_and_the_audit_log_after(swap, watch):
    page = watch("iris")

    render(changed(swap))

    first, second = page.frames
    assert 'id="swap-state-iris"' in first and 'id="history-iris"' in first
    assert 'id="audit-iris"' in second and 'id="history-iris"' not in second


def test_the_history_sent_with_a_state_ends_at_the_transition_that_state_wrote(swap, watch):
    page = watch("iris")
    claimed = lifecycle.transition(swap_id=swap.pk, message="claimed", state=Swap.State.SWAPPING)
    announced = notify.swap_event(claimed)
    # The record moved on before the console rendered the announcement.
    lifecycle.transition(swap_id=swap.pk, message="flipped", state=Swap.State.DRAINING)

    render(changed_by(announced))

    history = page.frames[0].split('id="history-iris"', 1)[1]
    newest = history.split(f'<li data-swap="{swap.pk}" ', 1)[1].split("</ol>", 1)[0]
    assert newest.startswith('data-state="swapping"')
    assert "claimed" in newest and "flipped" not in newest


def test_the_counts_are_published_right_after_the_state_and_before_the_rest(swap, watch):
    page = watch("iris")
    order = []
    page_push = page.push

    async def push(text: str) -> None:
        order.append("state" if 'id="swap-state-iris"' in text else "rest")
        await page_push(text)

    broadcast.watchers.discard("iris", page.push)
    page.push = push
    broadcast.watchers.add("iris", page.push)

    async def render_both() -> None:
        changes = changed(swap)
        await broadcast.render_states(changes, states_sent=lambda: order.append("counts"))
        await broadcast.render_rest(changes)

    async_to_sync(render_both)()

    assert order == ["state", "counts", "rest"]


def test_a_rollback_change_sends_the_model_pages_versions_table_with_the_served_version(
    alice, served_before, watch
):
    rollback = rollbacks.request_rollback(
        model="iris", target_version="1", reason="wrong answers", user=alice, via="t"
    )
    page = watch("iris")

    render(changed(rollback.swap))

    versions = page.frames[1].split('id="versions-iris"', 1)[1].split("</section>", 1)[0]
    serving = [row for row in versions.split("<tr>") if 'class="tag">serving' in row]
    assert len(serving) == 1 and '<th scope="row">1 <span' in serving[0]


def test_a_rollback_change_sends_the_approvals_queue_to_the_dashboard(alice, served_before, watch):
    rollback = rollbacks.request_rollback(
        model="iris", target_version="1", reason="wrong answers", user=alice, via="t"
    )
    dashboard = watch(DASHBOARD)

    render(changed(rollback.swap))

    assert 'id="approvals"' in dashboard.frames[1]


def test_nothing_is_rendered_for_pages_nobody_here_watches(swap, watch, monkeypatch):
    other = watch("another-model")
    rendered = []
    fragment = broadcast.fragment
    monkeypatch.setattr(
        broadcast,
        "fragment",
        lambda partial, context: rendered.append(partial) or fragment(partial, context),
    )

    render(changed(swap))

    assert rendered == [] and other.frames == []


def test_each_state_of_a_burst_is_shown_in_order_and_a_drains_counts_as_its_latest(swap, watch):
    page = watch("iris")
    event = notify.swap_event(swap)
    changes = Changes()
    for state, remaining in [
        ("pending", 0),
        ("swapping", 0),
        ("draining", 3),
        ("draining", 1),
        ("completed", 0),
    ]:
        changes.add({**event, "state": state, "requests_remaining": remaining})

    render(changes)

    *states, rest = page.frames
    shown = [frame.split('data-state="', 1)[1].split('"', 1)[0] for frame in states]
    assert shown == ["pending", "swapping", "draining", "completed"]
    assert "1 request still running on version 1" in states[2]
    assert all('id="history-iris"' in frame for frame in states)
    assert 'id="audit-iris"' in rest


def test_a_state_is_shown_as_its_change_left_it_though_the_record_moved_on(swap, watch):
    dashboard = watch(DASHBOARD)
    announced = notify.swap_event(swap)  # pending
    Swap.objects.filter(pk=swap.pk).update(state=Swap.State.SWAPPING)

    render(changed_by(announced))

    assert 'data-state="pending"' in dashboard.frames[0]


def test_a_full_render_sends_every_watched_page_its_snapshot(swap, watch):
    dashboard, page = watch(DASHBOARD), watch("iris")

    events = render(Changes(everything=True))

    assert dashboard.frames == [broadcast.snapshot(None)]
    assert page.frames == [broadcast.snapshot("iris")]
    assert events == ["states sent"]


def test_a_socket_that_fails_does_not_starve_the_others(swap, watch):
    async def closed(text: str) -> None:
        raise RuntimeError("the socket closed")

    broadcast.watchers.add("iris", closed)
    try:
        page = watch("iris")
        render(changed(swap))
    finally:
        broadcast.watchers.discard("iris", closed)

    assert len(page.frames) == 2


def test_a_dashboard_snapshot_has_every_models_state_the_latest_swaps_and_the_queue(swap):
    html = broadcast.snapshot(None)

    for element in ("swap-state-iris", "latest-swaps", "approvals"):
        assert f'id="{element}"' in html


def test_a_model_snapshot_has_everything_its_page_keeps_live_but_the_counts(swap):
    html = broadcast.snapshot("iris")

    for element in ("swap-state", "versions", "history", "audit", "rollback", "swap-form"):
        assert f'id="{element}-iris"' in html


def test_a_snapshot_of_an_unknown_model_is_empty(db):
    assert broadcast.snapshot("nope") == ""


def test_a_waiting_rollback_request_updates_the_approvals_queue(alice, served_before, watch):
    ServedModel.objects.filter(name="iris").update(rollback_requires_approval=True)
    request = rollbacks.request_rollback(
        model="iris", target_version="1", reason="wrong answers", user=alice, via="t"
    )
    dashboard, page = watch(DASHBOARD), watch("iris")
    events = render(changed_by(notify.request_event(request)))

    assert f'id="approval-{request.pk}"' in dashboard.frames[0]
    assert 'id="rollback-iris"' in page.frames[0]
    assert events == []  # no state changed: the counts keep their beat


def test_the_approvals_page_is_sent_the_queue_and_nothing_it_has_no_place_for(
    alice, served_before, watch
):
    ServedModel.objects.filter(name="iris").update(rollback_requires_approval=True)
    request = rollbacks.request_rollback(
        model="iris", target_version="1", reason="wrong answers", user=alice, via="t"
    )
    queue = watch(APPROVALS)
    swap = swapping.start_swap(model="iris", from_version="2", to_version="3", user=alice, via="t")

    render(changed_by(notify.request_event(request), notify.swap_event(swap)))
    async_to_sync(broadcast.pending_counts)("iris", [])
    async_to_sync(broadcast.traffic)("iris", at=0.0, rates={"2": 1.0})

    (html,) = queue.frames  # no state card, latest swaps, counts or chart point
    assert f'id="approval-{request.pk}"' in html
    assert "swap-state" not in html and "latest-swaps" not in html


def test_an_approvals_snapshot_is_the_queue_alone(alice, served_before):
    html = broadcast.snapshot(APPROVALS)

    assert 'id="approvals"' in html
    assert "swap-state" not in html and "latest-swaps" not in html


def test_pending_counts_show_the_requests_in_flight_on_each_version(watch):
    page = watch("iris")
    rows = [
        {"version": "1", "inflight": 3, "serving": False, "rate": 0.0},
        {"version": "2", "inflight": 0, "serving": True, "rate": 12.5},
    ]

    async_to_sync(broadcast.pending_counts)("iris", rows)

    (html,) = page.frames
    assert 'id="pending-iris"' in html
    assert '<td class="inflight" data-inflight="3">3</td>' in html


def test_traffic_sends_a_chart_point_as_json(watch):
    dashboard = watch(DASHBOARD)

    async_to_sync(broadcast.traffic)("iris", at=1000.0, rates={"1": 2.5})

    point = json.loads(dashboard.frames[0])
    assert point == {"kind": "traffic", "model": "iris", "t": 1000.0, "rates": {"1": 2.5}}
