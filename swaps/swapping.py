"""Swaps: starting one, running it through the engine, and recording what it reports.

A swap (or a model's first deploy) is accepted here (`start_swap`), run by an RQ job
(`run_swap`), and recorded transition by transition by the engine's `on_change`
observer (`Recorder` -> `record_transition`). Rollbacks (rollbacks.py) share the
records and the recorder; their drain, and every recovery, goes through `resume_swap`.

One operation per model at a time, guarded twice: by the database's conditional
unique constraint on running Swap rows (which decides between two simultaneous
requests, whatever the timing), and by the engine's own claim in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from swaps import audit, fleet_state, leases, notify, permissions, quarantine
from swaps.engine.errors import SwapError
from swaps.engine.fleet_keys import REDIS_DOWN
from swaps.engine.hotswapper import ModelHotSwapper
from swaps.engine.ports import InflightTracker
from swaps.engine.results import SwapState, SwapStatus
from swaps.models import ModelVersion, ServedModel, Swap, SwapTransition
from swaps.refusals import Conflict, invalid_fields
from swaps.registry import UNKNOWN_VERSION, get_model

log = logging.getLogger(__name__)

RETIRED = "version {version!r} of model {model!r} is retired: restore it to swap to it"
QUARANTINED = (
    "version {version!r} of model {model!r} is quarantined ({reason}): clear the quarantine "
    "to try it again"
)
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
ALREADY_ACTIVE = "model {model!r} already serves version {version!r}"
MUST_NAME_SOURCE = "model {model!r} serves version {active!r}: name it as from_version"
RUNNING = (
    "a {kind} of model {model!r} is already running ({source} -> {target}, {state}); "
    "try again when it finishes"
)
FORCE_REASON = (
    "say why the swap may break the clients of the active version (1-500 characters): "
    "it goes into the audit log"
)
MAX_FORCE_REASON = 500
QUEUED = "queued by {user}"
NOT_QUEUED = "its job could not be queued ({error}); nothing was changed: try again"
LOST_BEFORE_START = "its runner stopped before it started; nothing was changed"
FLIPPED_BEFORE_LOSS = "{reason}; the route had flipped: version {version} serves model {model!r}"
NOT_FLIPPED = "{reason}; the route never flipped: version {version} still serves model {model!r}"
TRANSITION_LOG = "{kind} {id} of {model} {versions}: {state}"


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
                swap = create_operation(
                    served=served, kind=kind, source=source, target=target, user=user
                )
                if force:
                    swap.forced_reason = force.strip()
                    swap.save(update_fields=["forced_reason"])
                # Imported here: jobs imports this module for the functions it runs.
                from swaps import jobs

                jobs.enqueue_swap(swap)
                record.accepted(swap=swap.pk, kind=kind)
        except REDIS_DOWN as exc:
            # The record committed; its job, queued on commit, could not be.
            return settle(
                swap_id=swap.pk, state=Swap.State.FAILED, message=NOT_QUEUED.format(error=exc)
            )
    if _no_worker_listens():  # say so on the record, rather than let it look like a slow start
        swap.message = NO_WORKER.format(queue=settings.HOTSWAP_RQ_QUEUE)
        still = Swap.objects.filter(pk=swap.pk, state=Swap.State.PENDING)
        if still.update(message=swap.message):  # else a worker started and took it since
            note(swap=swap, message=swap.message)
            return swap
    notify.swap_changed(swap)
    return swap


def _no_worker_listens() -> bool:
    """True only when Redis says so: the job is queued by now, and a Redis that fails
    this question must not fail (or mislabel) a swap that is on its way."""
    from swaps import jobs

    try:
        return not jobs.workers_listening()
    except REDIS_DOWN:
        return False


def create_operation(
    *,
    served: ServedModel,
    kind: str,
    source: ModelVersion | None,
    target: ModelVersion,
    user: permissions.User,
    requested_by: permissions.User = None,
) -> Swap:
    """Insert the operation's Swap row as Pending, or refuse: one runs already."""
    requester = requested_by or user
    try:
        with transaction.atomic():
            swap = Swap.objects.create(
                served_model=served,
                kind=kind,
                from_version=source,
                to_version=target,
                state=Swap.State.PENDING,
                requested_by=requester if requester and requester.is_authenticated else None,
            )
    except IntegrityError:
        raise Conflict(running_message(served)) from None
    transition = SwapTransition.objects.create(
        swap=swap,
        state=Swap.State.PENDING,
        message=QUEUED.format(user=audit.actor_name(requester)),
        at=timezone.now(),
    )
    log_transition(swap, transition)
    return swap


def running_message(served: ServedModel) -> str:
    running = (
        Swap.objects.filter(served_model=served, state__in=Swap.RUNNING)
        .select_related("from_version", "to_version")
        .first()
    )
    if running is None:  # it finished between the insert and this query
        return RUNNING.format(
            kind="swap", model=served.name, source="?", target="?", state="finishing"
        )
    return RUNNING.format(
        kind=running.kind,
        model=served.name,
        source=running.from_version.version if running.from_version else "-",
        target=running.to_version.version,
        state=running.state,
    )


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
    elif target.retired_at is not None:
        problems["to_version"] = RETIRED.format(model=served.name, version=to_version)
    elif target.quarantined_at is not None:
        problems["to_version"] = QUARANTINED.format(
            model=served.name, version=to_version, reason=target.quarantine_reason
        )
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
    swap = load_swap(swap_id)
    if swap.state != Swap.State.PENDING:
        return swap
    model_id = swap.served_model.name
    source = swap.from_version.version if swap.from_version else None
    target = swap.to_version.version
    forced = bool(swap.forced_reason)
    specs = fleet_state.specs_of([swap.from_version, swap.to_version])

    async def operation(engine: fleet_state.Engine) -> Swap:
        async with running(swap_id, engine) as run:
            if not await sync_to_async(claim)(swap_id=swap_id, message="started by a worker"):
                return await sync_to_async(load_swap)(swap_id)
            try:
                await fleet_state.ensure_specs(engine, specs)
                if source is None:
                    result = await run.swapper.deploy(model_id, target)
                else:
                    result = await run.swapper.swap_version(model_id, source, target, force=forced)
            except SwapError as exc:
                return await run.settle(state=Swap.State.FAILED, message=exc.message)
            return await run.settle(
                state=Swap.State.COMPLETED if result.success else Swap.State.FAILED,
                message=result.message,
                requests_drained=result.requests_drained if result.success else None,
            )

    swap = _run_operation(swap_id, operation)
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
    `takes_over` is the job id of a rollback's drain, to which the flip hands its lease.
    """
    swap = load_swap(swap_id)
    if not swap.is_running:
        return swap
    model_id = swap.served_model.name
    if reason:
        note(swap=swap, message=reason)

    async def operation(engine: fleet_state.Engine) -> Swap:
        async with running(swap_id, engine, takes_over=takes_over) as run:
            try:
                status = await run.swapper.resume(model_id)
                route = await engine.router.active(model_id)
            except SwapError as exc:
                return await run.settle(state=Swap.State.FAILED, message=exc.message)
            await run.recorder.flush()
            return await sync_to_async(reconcile)(
                swap_id=swap_id, status=status, route=route, reason=reason
            )

    return _run_operation(swap_id, operation)


Operation = Callable[[fleet_state.Engine], Awaitable[Swap]]


def _run_operation(swap_id: int, operation: Operation) -> Swap:
    """Run a runner's operation; the record as it stands if another runner has it."""
    try:
        return fleet_state.run(operation)
    except leases.LeaseHeld:
        return load_swap(swap_id)
    except SwapError as exc:  # the lease or the fleet could not be reached: nothing ran
        return settle(swap_id=swap_id, state=Swap.State.FAILED, message=exc.message)


def reconcile(*, swap_id: int, status: SwapStatus, route: str | None, reason: str) -> Swap:
    """Make the record and the model's active version match what the fleet did."""
    swap = load_swap(swap_id)
    target = swap.to_version.version
    if swap.is_running:
        if swap.state == Swap.State.PENDING and route != target:
            swap = settle(swap_id=swap_id, state=Swap.State.FAILED, message=LOST_BEFORE_START)
        elif _reports_this(status, swap):
            swap = settle(swap_id=swap_id, state=status.state.value, message=status.message)
        elif route == target:
            message = FLIPPED_BEFORE_LOSS.format(
                reason=reason or "resumed", version=route, model=swap.served_model.name
            )
            swap = settle(swap_id=swap_id, state=Swap.State.COMPLETED, message=message)
        else:
            message = NOT_FLIPPED.format(
                reason=reason or "resumed", version=route, model=swap.served_model.name
            )
            swap = settle(swap_id=swap_id, state=Swap.State.FAILED, message=message)
    if route is not None:
        mark_active(served=swap.served_model, version=route)
    return swap


def note(*, swap: Swap, message: str) -> None:
    """Record an event on a running operation (a recovery taking over) as a transition."""
    transition = SwapTransition.objects.create(
        swap=swap,
        state=swap.state,
        pending_requests=swap.requests_remaining,
        message=message,
        at=timezone.now(),
    )
    log_transition(swap, transition)
    notify.swap_changed(swap)


def _reports_this(status: SwapStatus, swap: Swap) -> bool:
    """Whether a final status on the board is this operation's, not an earlier one's."""
    return (
        status.state.value in Swap.FINAL
        and status.target_version == swap.to_version.version
        and status.start_time is not None
        and status.start_time >= swap.created_at
    )


def claim(*, swap_id: int, message: str, rq_job_id: str | None = None) -> bool:
    """Pending -> Swapping, for exactly one runner (a conditional UPDATE); `rq_job_id`
    names the job that will carry the operation on, where that is not the claimer's."""
    now = timezone.now()
    changes: dict[str, Any] = {"state": Swap.State.SWAPPING, "started_at": now, "message": message}
    if rq_job_id is not None:
        changes["rq_job_id"] = rq_job_id
    with transaction.atomic():
        claimed = Swap.objects.filter(pk=swap_id, state=Swap.State.PENDING).update(**changes)
        if claimed:
            transition = SwapTransition.objects.create(
                swap_id=swap_id, state=Swap.State.SWAPPING, message=message, at=now
            )
            swap = load_swap(swap_id)
            log_transition(swap, transition)
            notify.swap_changed(swap)
    return bool(claimed)


# -- recording ----------------------------------------------------------------------------------


class Recorder:
    """The engine's `on_change` observer for one operation: each status becomes a row.

    The engine awaits its observer between steps, so the writes are handed to a chain
    of tasks instead of being awaited: a rollback's flip never waits on the database.
    They run in order, and `flush` (at the end of `running`) waits for the last one.
    The ORM calls go through `sync_to_async`, which under `fleet_state.run` runs them
    on the thread that called `run`, inside its transaction, if any.
    """

    def __init__(self, swap_id: int, inflight: InflightTracker) -> None:
        self.swap_id = swap_id
        self._inflight = inflight
        self._last: asyncio.Task | None = None

    async def __call__(self, status: SwapStatus) -> None:
        drained = None
        left, baseline = status.previous_version, status.completed_at_flip
        if not status.state.running and left and baseline is not None:
            # What the engine's drain counts: completions on the left version since the flip.
            drained = max(await self._inflight.completed(status.model_id, left) - baseline, 0)
        self._last = asyncio.ensure_future(self._write(self._last, status, drained))

    async def flush(self) -> None:
        if self._last is not None:
            await self._last

    async def _write(
        self, before: asyncio.Task | None, status: SwapStatus, drained: int | None
    ) -> None:
        if before is not None:
            await before
        try:
            await sync_to_async(record_transition)(
                swap_id=self.swap_id, status=status, requests_drained=drained
            )
        except Exception:  # the next write, the job or the sweep settles the record
            log.exception("could not record %s of swap %s", status.state, self.swap_id)


@dataclass(frozen=True)
class Run:
    """One runner's hold on an operation: the swapper, its recorder and the lease."""

    swap_id: int
    swapper: ModelHotSwapper
    recorder: Recorder
    lease: leases.Lease

    async def settle(self, **outcome: Any) -> Swap:
        """Record the final state while the lease is still held: the sweep must never
        see a running record whose runner is gone when it has only not written yet."""
        await self.recorder.flush()
        return await sync_to_async(settle)(swap_id=self.swap_id, **outcome)


@contextlib.asynccontextmanager
async def running(
    swap_id: int, engine: fleet_state.Engine, *, takes_over: str | None = None
) -> AsyncIterator[Run]:
    """Hold the swap's lease; hand out a swapper whose every transition is recorded."""
    async with leases.hold(swap_id, takes_over=takes_over) as lease:
        recorder = Recorder(swap_id, engine.inflight)
        swapper = engine.swapper(policy=fleet_state.policy(), on_change=recorder)
        try:
            yield Run(swap_id, swapper, recorder, lease)
        finally:
            await recorder.flush()


def record_transition(
    *, swap_id: int, status: SwapStatus, requests_drained: int | None = None
) -> Swap | None:
    """Write one engine status to the swap's record; None if the record is final already.

    The model's active version follows the route the status reports: the engine flips
    the fleet, and the database records it in the same breath.
    """
    if status.state is SwapState.IDLE:
        return None
    state = Swap.State(status.state.value)
    now = timezone.now()
    changes: dict[str, Any] = {
        "state": state,
        "message": status.message,
        "requests_remaining": status.pending_requests,
    }
    if state in Swap.FINAL:
        changes["finished_at"] = status.end_time or now
        if requests_drained is not None:
            changes["requests_drained"] = requests_drained
    with transaction.atomic():
        if not Swap.objects.filter(pk=swap_id, state__in=Swap.RUNNING).update(**changes):
            return None  # a late report: recovery or the job settled it already
        swap = load_swap(swap_id)
        transition = SwapTransition.objects.create(
            swap=swap,
            state=state,
            pending_requests=status.pending_requests,
            message=status.message,
            at=now,
        )
        log_transition(swap, transition)
        # Swapping is before the flip: the route is still the one the database has.
        if status.current_version and state != Swap.State.SWAPPING:
            mark_active(
                served=swap.served_model,
                version=status.current_version,
                known=(swap.to_version, swap.from_version),
            )
        if state in Swap.FINAL:
            _audit_finish(swap)
    notify.swap_changed(swap)
    return swap


def settle(
    *,
    swap_id: int,
    state: str,
    message: str,
    requests_drained: int | None = None,
) -> Swap:
    """Put a still-running record in its final state (no-op if it is final already)."""
    now = timezone.now()
    changes: dict[str, Any] = {"state": state, "message": message, "finished_at": now}
    if requests_drained is not None:
        changes["requests_drained"] = requests_drained
    with transaction.atomic():
        if Swap.objects.filter(pk=swap_id, state__in=Swap.RUNNING).update(**changes):
            swap = load_swap(swap_id)
            transition = SwapTransition.objects.create(
                swap=swap,
                state=state,
                pending_requests=swap.requests_remaining,
                message=message,
                at=now,
            )
            log_transition(swap, transition)
            _audit_finish(swap)
            notify.swap_changed(swap)
        elif requests_drained is not None:
            Swap.objects.filter(pk=swap_id, requests_drained__isnull=True).update(
                requests_drained=requests_drained
            )
    return load_swap(swap_id)


def mark_active(
    *, served: ServedModel, version: str, known: Iterable[ModelVersion | None] = ()
) -> None:
    """Record that the fleet routes `served` to `version` (one of `known`, if loaded)."""
    routed = next((v for v in known if v is not None and v.version == version), None)
    routed = routed or served.versions.filter(version=version).first()
    if routed is None:
        log.error("the fleet routes model %s to unregistered version %s", served.name, version)
        return
    ServedModel.objects.filter(pk=served.pk).exclude(active_version=routed).update(
        active_version=routed
    )
    ModelVersion.objects.filter(pk=routed.pk, first_served_at__isnull=True).update(
        first_served_at=timezone.now()
    )
    served.active_version = routed


def log_transition(swap: Swap, transition: SwapTransition) -> None:
    """Log a transition row, once, when its transaction commits (a row rolled back is
    never told): INFO, with the operation's id, model and target version as fields, so
    a search for the id tells the operation's story, e.g. `swap 42 of iris 1 -> 2:
    draining (3 requests in flight): route flipped to version 2; draining version 1`.
    """
    model, target = swap.served_model.name, swap.to_version.version
    versions = f"{swap.from_version.version} -> {target}" if swap.from_version else f"to {target}"
    pending = transition.pending_requests
    in_flight = ""
    if pending or transition.state == Swap.State.DRAINING:
        in_flight = f" ({pending} request{'' if pending == 1 else 's'} in flight)"
    text = TRANSITION_LOG.format(
        kind=str(swap.kind), id=swap.pk, model=model, versions=versions, state=str(transition.state)
    )
    text += in_flight + (f": {transition.message}" if transition.message else "")
    fields = {"operation_id": swap.pk, "model": model, "version": target}
    # robust: a logging failure never stops the callbacks queued after it (the job's enqueue).
    transaction.on_commit(lambda: log.info("%s", text, extra=fields), robust=True)


def _audit_finish(swap: Swap) -> None:
    audit.audit(
        actor=swap.requested_by,
        via="engine",
        action=audit.FINISH,
        outcome=swap.state,
        model=swap.served_model.name,
        from_version=swap.from_version.version if swap.from_version else "",
        to_version=swap.to_version.version,
        details={
            "swap": swap.pk,
            "kind": swap.kind,
            "message": swap.message,
            "requests_drained": swap.requests_drained,
            "requests_remaining": swap.requests_remaining,
        },
    )


# -- reading --------------------------------------------------------------------------------


def live_status(*, model: str) -> SwapStatus:
    """The engine's SwapStatus for the model: state, versions and pending requests now."""
    served = get_model(model)
    specs = fleet_state.specs_of(served.versions.select_related("served_model"))

    async def operation(engine: fleet_state.Engine) -> SwapStatus:
        await fleet_state.ensure_specs(engine, specs)
        return await engine.swapper().get_swap_status(served.name)

    return fleet_state.run(operation)


def load_swap(swap_id: int) -> Swap:
    return Swap.objects.select_related(
        "served_model", "from_version", "to_version", "requested_by"
    ).get(pk=swap_id)
