"""broadcast.py: each change becomes the fragments the page swaps in, sent to its groups."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from swaps import broadcast, rollbacks, swapping
from swaps.models import ServedModel

pytestmark = pytest.mark.django_db


def listen(group: str) -> str:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)
    return channel


def heard(channel: str) -> dict:
    return async_to_sync(get_channel_layer().receive)(channel)


def html_heard(channel: str) -> str:
    """The next HTML push (skipping the publisher's wake-up calls)."""
    while (message := heard(channel))["type"] != "html":
        pass
    return message["html"]


def types_heard(channel: str, count: int) -> list[str]:
    return [heard(channel)["type"] for _ in range(count)]


@pytest.fixture
def swap(alice, candidate_version):
    return swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")


def test_model_groups_are_valid_channel_layer_names():
    assert broadcast.model_group("iris v2/../x") == "model.iris_v2_.._x"


def test_a_swap_change_sends_the_swap_state_to_the_dashboard(swap):
    channel = listen("dashboard")

    broadcast.swap_changed(swap)

    assert 'id="swap-state-iris"' in heard(channel)["html"]


def test_a_swap_change_sends_the_latest_swaps_to_the_dashboard(swap):
    channel = listen("dashboard")

    broadcast.swap_changed(swap)

    first, second = html_heard(channel), html_heard(channel)
    assert 'id="swap-state-iris"' in first  # the state goes out first, on its own
    assert 'id="latest-swaps"' in second


def test_a_swap_change_sends_the_history_and_audit_log_to_the_model_page(swap):
    channel = listen("model.iris")

    broadcast.swap_changed(swap)

    first, second = html_heard(channel), html_heard(channel)
    assert 'id="swap-state-iris"' in first
    assert 'id="history-iris"' in second and 'id="audit-iris"' in second


def test_a_swap_change_wakes_the_counts_publisher_right_after_the_state(swap):
    channel = listen("model.iris")

    broadcast.swap_changed(swap)

    assert types_heard(channel, 2) == ["html", "counts.wake"]


def test_a_swap_change_sends_the_model_pages_versions_table_with_the_served_version(
    alice, served_before
):
    rollback = rollbacks.request_rollback(
        model="iris", target_version="1", reason="wrong answers", user=alice, via="t"
    )
    channel = listen("model.iris")

    broadcast.swap_changed(rollback.swap)

    html_heard(channel)
    versions = html_heard(channel).split('id="versions-iris"', 1)[1].split("</section>", 1)[0]
    serving = [row for row in versions.split("<tr>") if 'class="tag">serving' in row]
    assert len(serving) == 1 and '<th scope="row">1 <span' in serving[0]


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


def test_a_waiting_rollback_request_updates_the_approvals_queue(alice, served_before):
    ServedModel.objects.filter(name="iris").update(rollback_requires_approval=True)
    request = rollbacks.request_rollback(
        model="iris", target_version="1", reason="wrong answers", user=alice, via="t"
    )
    channel = listen("dashboard")

    broadcast.rollback_request_changed(request)

    assert f'id="approval-{request.pk}"' in heard(channel)["html"]


def test_pending_counts_show_the_requests_in_flight_on_each_version():
    channel = listen("model.iris")
    rows = [
        {"version": "1", "inflight": 3, "serving": False, "rate": 0.0},
        {"version": "2", "inflight": 0, "serving": True, "rate": 12.5},
    ]

    async_to_sync(broadcast.pending_counts)("iris", rows)

    html = heard(channel)["html"]
    assert 'id="pending-iris"' in html
    assert '<td class="inflight" data-inflight="3">3</td>' in html


def test_traffic_sends_a_chart_point_as_json():
    channel = listen("dashboard")

    async_to_sync(broadcast.traffic)("iris", at=1000.0, rates={"1": 2.5})

    point = json.loads(heard(channel)["point"])
    assert point == {"kind": "traffic", "model": "iris", "t": 1000.0, "rates": {"1": 2.5}}
