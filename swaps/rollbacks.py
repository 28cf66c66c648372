"""Rollbacks: requested, approved where the model requires it, and flipped at once.

Instant means the route flip never waits behind a queue: the request (or the
approval) flips the route itself, in the calling process, and returns once every live
replica routes to the target. Only the drain of the version it left goes to an RQ job.

Where a model requires approval, a request waits until a different user with the
approve permission approves it; nobody decides their own request, and a rejected
request changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from swaps import audit, fleet_state, job_queue, lifecycle, notify, permissions
from swaps.engine.fleet_keys import REDIS_DOWN
from swaps.lifecycle import Run
from swaps.models import ModelVersion, RollbackRequest, ServedModel, Swap
from swaps.refusals import (
    Conflict,
    Forbidden,
    NotFound,
    OperationFailed,
    OperationUnavailable,
    Unavailable,
    invalid_fields,
)
from swaps.registry import UNKNOWN_VERSION, get_model

log = logging.getLogger(__name__)

UNKNOWN_REQUEST = "rollback request {request_id} does not exist"
OWN_REQUEST = "nobody approves or rejects their own rollback request: ask another approver"
ALREADY_DECIDED = "rollback request {request_id} was {state} already"
FLIP_FAILED = (
    "rollback request {request_id} of model {model!r} to version {version!r} failed; "
    "routing is unchanged: {message}"
)
NOT_SERVED_BEFORE = "version {version!r} has never served model {model!r}: swap to it instead"
ALREADY_ACTIVE = "model {model!r} already serves version {version!r}"
NOTHING_ACTIVE = "model {model!r} serves no version, so there is nothing to roll back"
REASON_MISSING = "say why (1-500 characters): it goes into the audit log"
MAX_REASON = 500


def request_rollback(
    *,
    model: str,
    target_version: str,
    reason: str,
    user: permissions.User,
    via: str,
) -> RollbackRequest:
    """Ask to roll `model` back to `target_version`: flipped at once, or held for approval."""
    with audit.attempt(
        actor=user,
        via=via,
        action=audit.REQUEST_ROLLBACK,
        model=model,
        to_version=target_version,
        details={"reason": reason},
    ) as record:
        permissions.require(user, permissions.REQUEST_ROLLBACK, action="request a rollback")
        served = get_model(model)
        target = _check_target(served, target_version, reason=reason)
        record.from_version = served.active_version.version
        with transaction.atomic():
            required = served.rollback_requires_approval
            request = RollbackRequest.objects.create(
                served_model=served,
                from_version=served.active_version,
                target_version=target,
                reason=reason.strip(),
                requested_by=user,
                approval_required=required,
                state=RollbackRequest.State.PENDING if required else RollbackRequest.State.APPROVED,
            )
            if not required:
                request.swap = lifecycle.create_operation(
                    served=served,
                    kind=Swap.Kind.ROLLBACK,
                    source=served.active_version,
                    target=target,
                    user=user,
                )
                request.save(update_fields=["swap"])
            record.accepted(request=request.pk, awaiting_approval=required)
    if request.swap is None:
        notify.rollback_request_changed(request)
        return request
    with notify.flips.flipping():
        request.swap = flip_rollback(swap_id=request.swap.pk)
        return request


def approve_rollback(*, request_id: int, user: permissions.User, via: str) -> RollbackRequest:
    """Approve a waiting request (another user's) and flip the route at once."""
    with _deciding(request_id, user, via, action=audit.APPROVE_ROLLBACK) as decision:
        record, approver, request = decision
        served = get_model(request.served_model.name)
        _check_target(served, request.target_version.version, reason=request.reason)
        record.from_version = served.active_version.version
        with transaction.atomic():
            _decide(request, RollbackRequest.State.APPROVED, approver)
            swap = lifecycle.create_operation(
                served=served,
                kind=Swap.Kind.ROLLBACK,
                source=served.active_version,
                target=request.target_version,
                user=approver,
                requested_by=request.requested_by,
            )
            RollbackRequest.objects.filter(pk=request.pk).update(swap=swap)
            record.accepted(swap=swap.pk)
    with notify.flips.flipping():
        request.swap = flip_rollback(swap_id=swap.pk)
        return request


def reject_rollback(*, request_id: int, user: permissions.User, via: str) -> RollbackRequest:
    """Turn down a waiting request (another user's); nothing else changes."""
    with _deciding(request_id, user, via, action=audit.REJECT_ROLLBACK) as decision:
        record, approver, request = decision
        with transaction.atomic():
            _decide(request, RollbackRequest.State.REJECTED, approver)
            record.accepted()
    request = _load(request.pk)
    notify.rollback_request_changed(request)
    return request


def flip_rollback(*, swap_id: int) -> Swap:
    """Flip the route to the rollback's target now; queue the drain of the left version.

    Returns once every live replica routes to the target, with the record as the flip
    wrote it (Draining): the answer is built from it, not read back (reading the request
    and its relations again cost the answer 3-4 ms). If the engine refused or failed,
    the record is Failed, routing untouched, and this raises OperationFailed
    (OperationUnavailable when the fleet could not be reached).
    """
    swap = Swap.objects.select_related("served_model", "from_version", "to_version").get(pk=swap_id)
    model_id, target = swap.served_model.name, swap.to_version.version
    specs = fleet_state.specs_of([swap.from_version, swap.to_version])
    drain = job_queue.job_id(job_queue.DRAIN, swap_id)

    async def step(run: Run) -> Swap:
        """The record once flipped (Draining), or failed."""
        await fleet_state.ensure_specs(run.engine, specs)
        result = await run.swapper.rollback_version(
            model_id, target, wait_for_drain=False, operation_id=run.operation_id
        )
        if not result.success:
            return await run.finish(state=Swap.State.FAILED, message=result.message)
        # The drain job starts from the record, which must say Draining first. The
        # lease goes to the drain job before the job exists: the sweep never sees the
        # drain without a runner, and the job never finds the lease still ours. The
        # record (the database) and the hand-over (Redis) are written side by side.
        await asyncio.gather(run.recorder.flush(), run.lease.hand_over(drain))
        await sync_to_async(_queue_drain)(swap_id)
        return run.recorder.written or await sync_to_async(lifecycle.load_swap)(swap_id)

    # The record names its drain job from the claim on: if this process dies before
    # queueing it, the sweep finds the job missing and recovers the rollback.
    outcome = lifecycle.drive(swap_id, step, claim="flipping the route", rq_job_id=drain)
    swap = outcome.swap or lifecycle.load_swap(swap_id)
    if swap.state != Swap.State.FAILED:
        return swap
    request = RollbackRequest.objects.get(swap=swap)
    error = OperationUnavailable if isinstance(outcome.error, Unavailable) else OperationFailed
    raise error(
        FLIP_FAILED.format(
            request_id=request.pk, model=model_id, version=target, message=swap.message
        )
    )


def _queue_drain(swap_id: int) -> None:
    """Queue the drain; if Redis refuses, the lease lapses and the sweep drains instead."""
    try:
        job_queue.enqueue_drain(swap_id)
    except REDIS_DOWN as exc:
        log.warning("swap %s: could not queue its drain (%s): the sweep will", swap_id, exc)


def get_request(request_id: int) -> RollbackRequest:
    try:
        return _load(request_id)
    except RollbackRequest.DoesNotExist:
        raise NotFound(UNKNOWN_REQUEST.format(request_id=request_id)) from None


@contextlib.contextmanager
def _deciding(
    request_id: int, user: permissions.User, via: str, *, action: str
) -> Iterator[tuple[audit.Attempt, Any, RollbackRequest]]:
    """An audited decision on a waiting request: by an approver, not its requester."""
    with audit.attempt(
        actor=user, via=via, action=action, details={"request": request_id}
    ) as record:
        verb = "approve" if action == audit.APPROVE_ROLLBACK else "reject"
        approver = permissions.require(
            user, permissions.APPROVE_ROLLBACK, action=f"{verb} a rollback"
        )
        request = get_request(request_id)
        record.model = request.served_model.name
        record.to_version = request.target_version.version
        if request.requested_by_id == approver.pk:
            raise Forbidden(OWN_REQUEST)
        if request.state != RollbackRequest.State.PENDING:
            raise Conflict(ALREADY_DECIDED.format(request_id=request_id, state=request.state))
        yield record, approver, request


def _decide(request: RollbackRequest, state: str, approver: Any) -> None:
    """Pending -> approved or rejected, for exactly one decision (a conditional UPDATE)."""
    decided_at = timezone.now()
    decided = RollbackRequest.objects.filter(
        pk=request.pk, state=RollbackRequest.State.PENDING
    ).update(state=state, decided_by=approver, decided_at=decided_at)
    if not decided:
        request.refresh_from_db()
        raise Conflict(ALREADY_DECIDED.format(request_id=request.pk, state=request.state))
    request.state, request.decided_by, request.decided_at = state, approver, decided_at


def _check_target(served: ServedModel, version: Any, *, reason: Any) -> ModelVersion:
    problems: dict[str, str] = {}
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        problems["reason"] = REASON_MISSING
    active = served.active_version
    target = served.versions.filter(version=version).first() if isinstance(version, str) else None
    if target is None:
        problems["target_version"] = UNKNOWN_VERSION.format(model=served.name, version=version)
    elif active is None:
        problems["target_version"] = NOTHING_ACTIVE.format(model=served.name)
    elif active.pk == target.pk:
        problems["target_version"] = ALREADY_ACTIVE.format(model=served.name, version=version)
    elif target.first_served_at is None:
        problems["target_version"] = NOT_SERVED_BEFORE.format(version=version, model=served.name)
    elif (problem := lifecycle.target_problem(served, target)) is not None:
        problems["target_version"] = problem
    if problems:
        raise invalid_fields(problems)
    return target


def _load(request_id: int) -> RollbackRequest:
    """The request with all its document shows, in two queries (one per lazy relation
    was 6 on the path of an instant rollback's answer)."""
    return (
        RollbackRequest.objects.select_related(
            "served_model",
            "from_version",
            "target_version",
            "requested_by",
            "decided_by",
            "swap__served_model",
            "swap__from_version",
            "swap__to_version",
            "swap__requested_by",
        )
        .prefetch_related("swap__transitions")
        .get(pk=request_id)
    )
