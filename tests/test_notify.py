"""The console's hook: each change is announced, once it has committed, and nothing rendered."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

import swaps.broadcast
from swaps import jobs, notify, rollbacks, swapping
from swaps.models import ServedModel

pytestmark = pytest.mark.django_db(transaction=True)


class Announcements:
    """A member of the console's CHANGES group, as a console process's live task is."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(notify.CHANGES, self.channel)

    def all(self) -> list[dict]:
        """Everything announced so far (without waiting for more)."""
        return async_to_sync(self._drain)()

    async def _drain(self) -> list[dict]:
        # The in-memory layer of the test process: what was sent is queued already.
        queue = self.layer.channels.get(self.channel)
        heard = []
        while queue is not None and not queue.empty():
            heard.append(await self.layer.receive(self.channel))
        return heard

    def close(self) -> None:
        async_to_sync(self.layer.group_discard)(notify.CHANGES, self.channel)


@pytest.fixture
def announcements():
    listening = Announcements()
    yield listening
    listening.close()


@pytest.fixture
def nothing_rendered(monkeypatch):
    """The announcing thread renders no fragment: rendering is the console's."""

    def refuse(*args, **kwargs):
        raise AssertionError("a fragment was rendered on the thread that made the change")

    monkeypatch.setattr(swaps.broadcast, "fragment", refuse)


def start(user):
    return swapping.start_swap(model="iris", from_version="1", to_version="2", user=user, via="t")


def test_a_swap_is_announced_once_it_is_committed(alice, candidate_version, announcements):
    with transaction.atomic():
        swap = start(alice)
        assert announcements.all() == []

    (event,) = announcements.all()
    assert event == notify.swap_event(swap)
    assert (event["record"], event["id"], event["model"]) == ("swap", swap.pk, "iris")
    assert (event["kind"], event["state"]) == ("swap", "pending")


def test_every_transition_is_announced_and_nothing_rendered(
    alice, candidate_version, announcements, nothing_rendered
):
    swap = start(alice)

    jobs.run_swap(swap.pk)

    heard = announcements.all()
    assert {(event["record"], event["id"]) for event in heard} == {("swap", swap.pk)}
    states = [event["state"] for event in heard]
    assert [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s] == [
        "pending",
        "swapping",
        "draining",
        "completed",
    ]
    assert heard[-1]["active_version_id"] == swap.to_version_id  # as the change left it


def test_a_waiting_rollback_request_is_announced(alice, served_before, announcements):
    ServedModel.objects.filter(name="iris").update(rollback_requires_approval=True)

    request = rollbacks.request_rollback(
        model="iris", target_version="1", reason="wrong answers", user=alice, via="t"
    )

    (event,) = announcements.all()
    assert event == notify.request_event(request)
    assert (event["record"], event["id"], event["model"]) == (
        "rollback_request",
        request.pk,
        "iris",
    )


def test_an_announcement_that_fails_does_not_fail_the_swap(alice, candidate_version, monkeypatch):
    async def unreachable(*args, **kwargs):
        raise ConnectionError("the channel layer is away")

    monkeypatch.setattr(get_channel_layer(), "group_send", unreachable)

    swap = start(alice)
    jobs.run_swap(swap.pk)

    swap.refresh_from_db()
    assert swap.state == "completed"
