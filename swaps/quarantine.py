"""Quarantined versions: their trial load crashed, hung or broke their memory limit.

The replica whose trial found it (`engine/sandbox.py`) writes the quarantine to the
fleet at once, so no other replica tries the version, even with the control plane down.
This module makes the database follow: `record_fleet_quarantines` marks the version's
record (the console and the API show it, swaps and rollbacks refuse it), writes an
audit entry naming the replica, and retires the version from the fleet's desired set.
It runs after every swap that failed and in every sweep. `clear` is the way back: an
operator with the register permission clears the record and the fleet's entry together,
and the next swap to the version tries it again.

Republishing writes the database's quarantines back to Redis (`fleet_state.republish`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.db import transaction

from swaps import audit, fleet_state, permissions
from swaps.models import ModelVersion
from swaps.refusals import Conflict, NotFound, Refused
from swaps.registry import UNKNOWN_VERSION, get_model

log = logging.getLogger(__name__)

NOT_QUARANTINED = "version {version!r} of model {model!r} is not quarantined"
# A reason is a replica's words about an artifact's failure: bounded before it is stored.
REASON_LENGTH = 2000


def record_fleet_quarantines() -> list[ModelVersion]:
    """Record every quarantine the fleet holds that the database does not; return them.

    Never raises for the fleet: a Redis that cannot be reached is logged, and the next
    sweep records what this one could not.
    """
    try:
        found = fleet_state.run(lambda engine: engine.quarantined())
    except Refused as exc:
        log.warning("could not read the fleet's quarantined versions: %s", exc.message)
        return []
    recorded = []
    for (model, version), entry in sorted(found.items()):
        with transaction.atomic():
            row = (
                ModelVersion.objects.select_for_update()
                .select_related("served_model")
                .filter(served_model__name=model, version=version, quarantined_at=None)
                .first()
            )
            if row is None:  # recorded already, or no such version in the database
                continue
            # Read again under the row's lock: an operator's clear that committed while
            # this waited for the lock has cleared the fleet's entry too, and the first
            # read (stale now) must not quarantine the version again behind their back.
            if not _still_quarantined(model, version):
                continue
            row.quarantined_at = datetime.fromtimestamp(entry.at, UTC)
            row.quarantine_reason = entry.reason[:REASON_LENGTH]
            row.save(update_fields=["quarantined_at", "quarantine_reason"])
            audit.audit(
                actor=f"replica {entry.replica}" if entry.replica else "fleet",
                via="fleet",
                action=audit.QUARANTINE_VERSION,
                outcome="accepted",
                model=model,
                to_version=version,
                details={"reason": row.quarantine_reason},
            )
        log.error("version %s of model %s is quarantined: %s", version, model, entry.reason)
        recorded.append(row)
    if recorded:
        _retire_from_fleet([(v.served_model.name, v.version) for v in recorded])
    return recorded


def clear(*, model: str, version: Any, user: permissions.User, via: str) -> ModelVersion:
    """Clear a version's quarantine, in the database and the fleet: it may be tried again."""
    with audit.attempt(
        actor=user,
        via=via,
        action=audit.CLEAR_QUARANTINE,
        model=model,
        to_version=version if isinstance(version, str) else "",
    ) as record:
        permissions.require(user, permissions.REGISTER_VERSION, action="clear a quarantine")
        served = get_model(model)
        # One a replica found a moment ago may be only in Redis yet: record it first.
        record_fleet_quarantines()
        with transaction.atomic():
            found = served.versions.select_for_update().filter(version=version).first()
            if not isinstance(version, str) or found is None:
                raise NotFound(UNKNOWN_VERSION.format(model=model, version=version))
            if found.quarantined_at is None:
                raise Conflict(NOT_QUARANTINED.format(model=model, version=version))
            reason = found.quarantine_reason
            found.quarantined_at = None
            found.quarantine_reason = ""
            found.save(update_fields=["quarantined_at", "quarantine_reason"])
            # Inside the transaction: a fleet that cannot be reached leaves both as they were.
            fleet_state.run(lambda engine: engine.set_quarantine(model, version, None))
            record.accepted(reason=reason)
    return found


def _still_quarantined(model: str, version: str) -> bool:
    try:
        return (model, version) in fleet_state.run(lambda engine: engine.quarantined())
    except Refused:  # cannot tell: record nothing now, the next sweep looks again
        return False


def _retire_from_fleet(keys: list[tuple[str, str]]) -> None:
    """Mark the versions to unload (a replica keeps one it still routes to)."""

    async def retire(engine: fleet_state.Engine) -> None:
        for model_id, version in keys:
            await engine.versions.unload(model_id, version)

    try:
        fleet_state.run(retire)
    except Refused as exc:
        log.warning("could not retire quarantined versions from the fleet: %s", exc.message)
