"""The audit log's one writer, and the shape every audited attempt takes.

Every attempt to change something lands here once, allowed or refused: the domain
functions record what reaches them (`attempt`), the API records what it refuses before
that (no credentials, malformed JSON, an oversized body).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from swaps.models import AuditEntry
from swaps.refusals import Refused

Actor = AbstractBaseUser | AnonymousUser | str | None

# The actions, as they appear in the log.
REGISTER_VERSION = "register_version"
RETIRE_VERSION = "retire_version"
RESTORE_VERSION = "restore_version"
QUARANTINE_VERSION = "quarantine_version"  # a replica's trial found it unsafe to load
CLEAR_QUARANTINE = "clear_quarantine"
START_SWAP = "start_swap"
REQUEST_ROLLBACK = "request_rollback"
APPROVE_ROLLBACK = "approve_rollback"
REJECT_ROLLBACK = "reject_rollback"
FINISH = "finish"  # a swap, rollback or deploy reached its final state
RECOVER = "recover"  # the sweep took over an operation whose runner died
REPUBLISH = "republish_fleet"
CREATE_API_TOKEN = "create_api_token"


def actor_name(actor: Actor) -> str:
    if actor is None or isinstance(actor, AnonymousUser):
        return "anonymous"
    if isinstance(actor, str):
        return actor
    return actor.get_username()


def audit(
    *,
    actor: Actor,
    via: str,
    action: str,
    outcome: str,
    model: str = "",
    from_version: str = "",
    to_version: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    return AuditEntry.objects.create(
        actor=_storable(actor_name(actor))[:150],
        via=via,
        action=action,
        outcome=_storable(outcome),
        model=_storable(str(model))[:64],
        from_version=_storable(str(from_version or ""))[:64],
        to_version=_storable(str(to_version or ""))[:64],
        details=_storable(details or {}),
    )


def _storable(value: Any) -> Any:
    """Drop NUL characters from text a client sent: PostgreSQL refuses them in text and
    JSON, and a refused attempt must still leave its audit row."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


@dataclass
class Attempt:
    """What an audited call is about; the call fills in what it learns on the way."""

    actor: Actor
    via: str
    action: str
    model: str = ""
    from_version: str = ""
    to_version: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def record(self, outcome: str, **details: Any) -> AuditEntry:
        return audit(
            actor=self.actor,
            via=self.via,
            action=self.action,
            outcome=outcome,
            model=self.model,
            from_version=self.from_version,
            to_version=self.to_version,
            details={**self.details, **details},
        )

    def accepted(self, **details: Any) -> AuditEntry:
        return self.record(AuditEntry.Outcome.ACCEPTED, **details)


@contextmanager
def attempt(**about: Any) -> Iterator[Attempt]:
    """Audit a refusal raised inside the block; the block records its own acceptance.

    A refusal's entry is written after the block's transaction rolled back, so the
    refused attempt leaves exactly one row behind: its audit entry. The block writes
    `accepted()` inside its transaction, so a change and its entry commit together.
    """
    record = Attempt(**about)
    try:
        yield record
    except Refused as refusal:
        record.record(AuditEntry.Outcome.REFUSED, error=refusal.message, **refusal.details())
        refusal.audited = True
        raise
