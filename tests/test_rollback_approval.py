"""Who may turn a model's rollback approval on or off: not the people it holds back."""

from __future__ import annotations

import pytest

from swaps import registry
from swaps.models import AuditEntry, ServedModel
from swaps.refusals import Forbidden

from .control_plane import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def gated(db) -> ServedModel:
    return ServedModel.objects.create(name="held", rollback_requires_approval=True)


def test_an_operator_cannot_turn_off_the_approval_their_rollbacks_wait_for(alice, gated):
    with pytest.raises(Forbidden) as refused:
        registry.set_rollback_approval(model=gated, required=False, user=alice, via="test")

    assert refused.value.message == (
        "alice may not change whether a model's rollbacks need approval: "
        "that needs the swaps.set_rollback_approval permission"
    )
    gated.refresh_from_db()
    assert gated.rollback_requires_approval


def test_a_refused_change_of_the_approval_is_audited(alice, gated):
    with pytest.raises(Forbidden):
        registry.set_rollback_approval(model=gated, required=False, user=alice, via="test")

    entry = AuditEntry.objects.get(action="set_rollback_approval")
    assert (entry.actor, entry.outcome, entry.model) == ("alice", "refused", "held")


def test_an_approver_cannot_turn_off_the_approval_either(bob, gated):
    # bob may request rollbacks too: the gate holds him back as well.
    with pytest.raises(Forbidden, match=r"needs the swaps\.set_rollback_approval permission"):
        registry.set_rollback_approval(model=gated, required=False, user=bob, via="test")

    gated.refresh_from_db()
    assert gated.rollback_requires_approval


def test_a_user_with_set_rollback_approval_turns_it_off(gated):
    keeper = make_user("carol", ("set_rollback_approval",))

    registry.set_rollback_approval(model=gated, required=False, user=keeper, via="test")

    gated.refresh_from_db()
    assert not gated.rollback_requires_approval
    entry = AuditEntry.objects.get(action="set_rollback_approval")
    assert (entry.actor, entry.outcome, entry.details) == (
        "carol",
        "accepted",
        {"required": False},
    )
