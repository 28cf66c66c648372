"""Swaps: starting one, and what its job and a recovery ask of the engine.

A swap (or a model's first deploy) is accepted here (`start_swap`) and run by an RQ job
(`run_swap`); a rollback's drain, and every recovery, goes through `resume_swap`. How an
operation is driven and each of its transitions recorded is lifecycle.py's, for every
kind of operation.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction

from swaps import audit, fleet_state, job_queue, lifecycle, notify, permissions, quarantine
from swaps.engine.fleet_keys import REDIS_DOWN
from swaps.engine.results import SwapStatus
from swaps.lifecycle import Run
from swaps.models import ModelVersion, ServedModel, Swap
from swaps.refusals import invalid_fields
from swaps.registry import UNKNOWN_VERSION, get_model

log = logging.getLogger(__name__)

GATED_ROLLBACK = (
    "version {version!r} served model {model!r} before, and the model's rollbacks need a "
    "second person's approval: going back to it is a rollback, so request one"
)
NO_WORKER = (
    "queued, but no worker listens on queue {queue!r}: the swap starts when one does "
    "(manage.py rqworker {queue})"
)
VERSION_TYPE = "must be a version name, a string{optional}"
SAME_VERSION = "is the same as from_version"
NOT_ACTIVE = "model {model!r} serves version {active!r}, not {version!r}"
NOTHING_ACTIVE = "model {model!r} serves no version yet: leave from_version empty to deploy"
MUST_NAME_SOURCE = "model {model!r} serves version {active!r}: name it as from_version"
FORCE_REASON = (
    "say why the swap may break the clients of the active version (1-500 characters): "
    "it goes into the audit log"
)
MAX_FORCE_REASON = 500
NOT_QUEUED = "its job could not be queued ({error}); nothing was changed: try again"
LOST_BEFORE_START = "its runner stopped before it started; nothing was changed"
FLIPPED_BEFORE_LOSS = "{reason}; the route had flipped: version {version} serves model {model!r}"
NOT_FLIPPED = "{reason}; the route never flipped: version {version} still serves model {model!r}"


# -- accepting a swap -----------------------------------------------------------------------


def start_swap(
    *,
    model: str,
    from_version: str | None,
    to_version: str,
    user: permissions.User,
    via: str,
    force: str | None = None,
) -> Swap:
    """Accept a swap of `model` from its active version to `to_version`; queue its job.

    With no `from_version` on a model that serves nothing yet, it is the model's first
    deploy. Refusals (no permission, unknown model or version, wrong source, the same
    version twice, another operation running) change nothing but the audit log.
    The job refuses a target that would break the active version's clients (the
    engine's compatibility check), unless `force` says why it may (audited).
    """
    with audit.attempt(
        actor=user,
        via=via,
        action=audit.START_SWAP,
        model=model,
        from_version=from_version or "",
        to_version=to_version,
        details={"forced": force} if force is not None else {},
    ) as record:
        permissions.require(user, permissions.START_SWAP, action="start a swap")
        served = get_model(model)
        source, target = _check_swap(served, from_version, to_version, force)
        kind = Swap.Kind.SWAP if source else Swap.Kind.DEPLOY
        try:
            with transaction.atomic():
                swap = lifecycle.create_operation(
                    served=served, kind=kind, source=source, target=target, user=user
                )
                if force:
                    swap.forced_reason = force.strip()
                    swap.save(update_fields=["forced_reason"])
                job_queue.enqueue_swap(swap)
                record.accepted(swap=swap.pk, kind=kind)
        except REDIS_DOWN as exc:
            # The record committed; its job, queued on commit, could not be.
            return lifecycle.finish(
                swap_id=swap.pk, state=Swap.State.FAILED, message=NOT_QUEUED.format(error=exc)
            )
    if _no_worker_listens():  # say so on the record, rather than let it look like a slow start
        message = NO_WORKER.format(queue=settings.HOTSWAP_RQ_QUEUE)
        # Only while it is Pending: else a worker started and took it since.
        told = lifecycle.transition(swap_id=swap.pk, message=message, leaving=(Swap.State.PENDING,))
        if told is not None:
            return told
    notify.swap_changed(swap)
    return swap


def _no_worker_listens() -> bool:
    """True only when Redis says so: the job is queued by now, and a Redis that fails
    this question must not fail (or mislabel) a swap that is on its way."""
    try:
        return not job_queue.workers_listening()
    except REDIS_DOWN:
        return False


def _check_swap(
    served: ServedModel, from_version: str | None, to_version: str, force: Any = None
) -> tuple[ModelVersion | None, ModelVersion]:
    active = served.active_version
    problems: dict[str, str] = {}
    if force is not None and (
        not isinstance(force, str) or not force.strip() or len(force) > MAX_FORCE_REASON
    ):
        problems["force"] = FORCE_REASON
    if not isinstance(to_version, str) or not to_version:
        problems["to_version"] = VERSION_TYPE.format(optional="")
    if from_version is not None and not isinstance(from_version, str):
        problems["from_version"] = VERSION_TYPE.format(optional=" (or null to deploy)")
    if problems:
        raise invalid_fields(problems)
    if from_version is not None and from_version == to_version:
        problems["to_version"] = SAME_VERSION
    target = served.versions.filter(version=to_version).first()
    if target is None:
        problems["to_version"] = UNKNOWN_VERSION.format(model=served.name, version=to_version)
    elif (problem := lifecycle.target_problem(served, target)) is not None:
        problems["to_version"] = problem
    elif served.rollback_requires_approval and target.first_served_at and active is not None:
        # Back to a version that served before is a rollback by another name: it takes
        # the second person the model's rollbacks need.
        problems["to_version"] = GATED_ROLLBACK.format(model=served.name, version=to_version)
    if from_version is None:
        if active is not None:
            problems["from_version"] = MUST_NAME_SOURCE.format(
                model=served.name, active=active.version
            )
    elif not served.versions.filter(version=from_version).exists():
        problems["from_version"] = UNKNOWN_VERSION.format(model=served.name, version=from_version)
    elif active is None:
        problems["from_version"] = NOTHING_ACTIVE.format(model=served.name)
    elif active.version != from_version:
        problems["from_version"] = NOT_ACTIVE.format(
            model=served.name, active=active.version, version=from_version
        )
    if problems:
        raise invalid_fields(problems)
    source = active if from_version is not None else None
    return source, target


# -- running it -------------------------------------------------------------------------------


def run_swap(*, swap_id: int) -> Swap:
    """The swap job's body: run the operation through the engine, recording each step.

    Idempotent: a retry of a job whose swap already left Pending does nothing.
    """
    swap = lifecycle.load_swap(swap_id)
    if swap.state != Swap.State.PENDING:
        return swap
    model_id = swap.served_model.name
    source = swap.from_version.version if swap.from_version else None
    target = swap.to_version.version
    forced = bool(swap.forced_reason)
    specs = fleet_state.specs_of([swap.from_version, swap.to_version])

    async def step(run: Run) -> Swap:
        await fleet_state.ensure_specs(run.engine, specs)
        if source is None:
            result = await run.swapper.deploy(model_id, target, operation_id=run.operation_id)
        else:
            result = await run.swapper.swap_version(
                model_id, source, target, force=forced, operation_id=run.operation_id
            )
        return await run.finish(
            state=Swap.State.COMPLETED if result.success else Swap.State.FAILED,
            message=result.message,
            drained=result.requests_drained if result.success else None,
        )

    swap = lifecycle.drive(swap_id, step, claim="started by a worker").swap
    if swap.state == Swap.State.FAILED:
        # A replica may have quarantined the target on the way: show it now, not at
        # the next sweep.
        quarantine.record_fleet_quarantines()
    return swap


def resume_swap(*, swap_id: int, reason: str = "", takes_over: str | None = None) -> Swap:
    """Carry an operation whose runner stopped (or a rollback's drain) to its end.

    The engine's `resume` drains and completes what was Draining, and completes or
    fails what was Swapping by whether the route flipped. Then the database is made to
    match the fleet: the record final, the model's active version the routed one.
    `reason` is set when this is a recovery: it is noted among the record's transitions.
    `takes_over` is the job id of a rollback's drain, to which the flip handed its lease.
    """
    swap = lifecycle.load_swap(swap_id)
    if not swap.is_running:
        return swap
    model_id = swap.served_model.name
    if reason:
        lifecycle.transition(swap_id=swap_id, message=reason)

    async def step(run: Run) -> Swap:
        status = await run.swapper.resume(model_id)
        route = await run.engine.router.active(model_id)
        await run.recorder.flush()
        return await sync_to_async(reconcile)(
            swap_id=swap_id, status=status, route=route, reason=reason
        )

    return lifecycle.drive(swap_id, step, takes_over=takes_over).swap


def reconcile(*, swap_id: int, status: SwapStatus, route: str | None, reason: str) -> Swap:
    """Make the record and the model's active version match what the fleet did."""
    swap = lifecycle.load_swap(swap_id)
    target = swap.to_version.version
    if swap.is_running:
        if swap.state == Swap.State.PENDING and route != target:
            state, message = Swap.State.FAILED, LOST_BEFORE_START
        elif (
            status.state.value in Swap.FINAL
            and status.operation_id == str(swap.pk)
            and status.target_version == target
        ):
            state, message = status.state.value, status.message  # the engine's own end
        elif route == target:
            state = Swap.State.COMPLETED
            message = FLIPPED_BEFORE_LOSS.format(
                reason=reason or "resumed", version=route, model=swap.served_model.name
            )
        else:
            state = Swap.State.FAILED
            message = NOT_FLIPPED.format(
                reason=reason or "resumed", version=route, model=swap.served_model.name
            )
        swap = lifecycle.finish(swap_id=swap_id, state=state, message=message)
    if route is not None:
        lifecycle.mark_active(served=swap.served_model, version=route)
    return swap


# -- reading --------------------------------------------------------------------------------


def live_status(*, model: str) -> SwapStatus:
    """The engine's SwapStatus for the model: state, versions and pending requests now."""
    served = get_model(model)
    specs = fleet_state.specs_of(served.versions.select_related("served_model"))

    async def operation(engine: fleet_state.Engine) -> SwapStatus:
        await fleet_state.ensure_specs(engine, specs)
        return await engine.swapper().get_swap_status(served.name)

    return fleet_state.run(operation)
