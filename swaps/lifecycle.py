"""One lifecycle for every operation of a model: a swap, a first deploy, a rollback.

An operation is a `Swap` row. It is created Pending (`create_operation`, where the
database's conditional unique constraint on running rows is the claim on the model),
driven by one runner at a time (`drive`: the lease, the engine step, its outcome), and
every change of its state is written by `transition`: a conditional UPDATE from the
states it may leave, a transition row, the log line and the console's notice on commit,
the model's active version when the route moved, the audit entry when it ends.

swapping.py and rollbacks.py say what each kind of operation does; this module is how
any of them runs and is recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db import IntegrityError, transaction
from django.utils import timezone

from swaps import audit, fleet_state, leases, notify, permissions
from swaps.engine.errors import SwapError
from swaps.engine.hotswapper import ModelHotSwapper
from swaps.engine.ports import InflightTracker
from swaps.engine.results import SwapState, SwapStatus
from swaps.models import ModelVersion, ServedModel, Swap, SwapTransition
from swaps.refusals import Conflict, Refused, from_engine

log = logging.getLogger(__name__)

QUEUED = "queued by {user}"
RUNNING = (
    "a {kind} of model {model!r} is already running ({source} -> {target}, {state}); "
    "try again when it finishes"
)
TRANSITION_LOG = "{kind} {id} of {model} {versions}: {state}"
RETIRED = "version {version!r} of model {model!r} is retired: restore it to swap to it"
QUARANTINED = (
    "version {version!r} of model {model!r} is quarantined ({reason}): clear the quarantine "
    "to try it again"
)


# -- creating one ---------------------------------------------------------------------------


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
                message=QUEUED.format(user=audit.actor_name(requester)),
                requested_by=requester if requester and requester.is_authenticated else None,
            )
    except IntegrityError:
        raise Conflict(running_message(served)) from None
    # The row's first transition; nobody else can have written it yet.
    return transition(swap_id=swap.pk, message=swap.message, notify_console=False)


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


def target_problem(served: ServedModel, target: ModelVersion) -> str | None:
    """Why no operation may go to `target`, whatever its kind; None if one may."""
    if target.retired_at is not None:
        return RETIRED.format(model=served.name, version=target.version)
    if target.quarantined_at is not None:
        return QUARANTINED.format(
            model=served.name, version=target.version, reason=target.quarantine_reason
        )
    return None


# -- recording it ---------------------------------------------------------------------------


def transition(
    *,
    swap_id: int,
    message: str,
    state: str | None = None,
    leaving: Collection[str] = Swap.RUNNING,
    pending: int | None = None,
    drained: int | None = None,
    finished_at: Any = None,
    route: str | None = None,
    notify_console: bool = True,
    **fields: Any,
) -> Swap | None:
    """Write one change of a running operation; None if it was no longer in `leaving`.

    `state` None records an event in the state it is in (a recovery taking over). The
    UPDATE is conditional on the state, so of two writers (a late engine report and the
    sweep, say) exactly one moves the record; the other learns it and writes nothing.
    `route` is the version the fleet routes the model to after this change: the model's
    active version follows it in the same transaction. A final state stamps
    `finished_at` (now unless given), keeps `drained`, and is audited.
    """
    now = timezone.now()
    changes: dict[str, Any] = {"message": message, **fields}
    final = state in Swap.FINAL
    if state is not None:
        changes["state"] = state
    if pending is not None:
        changes["requests_remaining"] = pending
    if final:
        changes["finished_at"] = finished_at or now
        if drained is not None:
            changes["requests_drained"] = drained
    with transaction.atomic():
        if not Swap.objects.filter(pk=swap_id, state__in=leaving).update(**changes):
            return None
        swap = load_swap(swap_id)
        row = SwapTransition.objects.create(
            swap=swap,
            state=swap.state,
            pending_requests=swap.requests_remaining,
            message=message,
            at=now,
        )
        log_transition(swap, row)
        swap.latest_transition = row  # the row this change wrote: its announcement names it
        if route is not None:
            mark_active(
                served=swap.served_model, version=route, known=(swap.to_version, swap.from_version)
            )
        if final:
            _audit_finish(swap)
        if notify_console:
            notify.swap_changed(swap)  # on commit
    return swap


def finish(*, swap_id: int, state: str, message: str, drained: int | None = None) -> Swap:
    """Put a still-running operation in its final state; the record as it stands if it
    was final already (a drained count it lacks is still kept)."""
    swap = transition(swap_id=swap_id, state=state, message=message, drained=drained)
    if swap is not None:
        return swap
    if drained is not None:
        Swap.objects.filter(pk=swap_id, requests_drained__isnull=True).update(
            requests_drained=drained
        )
    return load_swap(swap_id)


def record_status(
    *, swap_id: int, status: SwapStatus, requests_drained: int | None = None
) -> Swap | None:
    """Write one engine status to the operation's record; None if it is final already.

    The model's active version follows the route the status reports: the engine flips
    the fleet, and the database records it in the same breath. Swapping is before the
    flip: the route is still the one the database has.
    """
    if status.state is SwapState.IDLE:
        return None
    state = Swap.State(status.state.value)
    moved = status.current_version and state != Swap.State.SWAPPING
    return transition(
        swap_id=swap_id,
        state=state,
        message=status.message,
        pending=status.pending_requests,
        drained=requests_drained,
        finished_at=status.end_time,
        route=status.current_version if moved else None,
    )


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
    if routed.first_served_at is None:  # read in this transaction: a rollback's target has one
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


def load_swap(swap_id: int) -> Swap:
    return Swap.objects.select_related(
        "served_model", "from_version", "to_version", "requested_by"
    ).get(pk=swap_id)


# -- driving it -----------------------------------------------------------------------------


class Recorder:
    """The engine's `on_change` observer for one operation: each status becomes a row.

    The engine awaits its observer between steps, so the writes are handed to a chain
    of tasks instead of being awaited: a rollback's flip never waits on the database.
    They run in order, and `flush` (at the end of `drive`) waits for the last one.
    The ORM calls go through `sync_to_async`, which under `fleet_state.run` runs them
    on the thread that called `run`, inside its transaction, if any.
    """

    def __init__(self, swap_id: int, inflight: InflightTracker) -> None:
        self.swap_id = swap_id
        self._inflight = inflight
        self._last: asyncio.Task | None = None
        # The record as the last write left it (with its model, versions and requester).
        self.written: Swap | None = None

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
            written = await sync_to_async(record_status)(
                swap_id=self.swap_id, status=status, requests_drained=drained
            )
        except Exception:  # the next write, the job or the sweep settles the record
            log.exception("could not record %s of swap %s", status.state, self.swap_id)
            written = None  # what the record says now is the database's to tell
        self.written = written


@dataclass(frozen=True)
class Run:
    """One runner's hold on an operation: the engine, its swapper, recorder and lease."""

    swap_id: int
    engine: fleet_state.Engine
    swapper: ModelHotSwapper
    recorder: Recorder
    lease: leases.Lease

    @property
    def operation_id(self) -> str:
        """The record's id, as the engine's status carries it (`SwapStatus.operation_id`)."""
        return str(self.swap_id)

    async def finish(self, *, state: str, message: str, drained: int | None = None) -> Swap:
        """Record the final state while the lease is still held: the sweep must never
        see a running record whose runner is gone when it has only not written yet."""
        await self.recorder.flush()
        return await sync_to_async(finish)(
            swap_id=self.swap_id, state=state, message=message, drained=drained
        )


@dataclass(frozen=True)
class Outcome:
    """What `drive` ended with: the record (None where the step said there is nothing
    to read back) and the refusal the engine's error became, if one failed it."""

    swap: Swap | None
    error: Refused | None = None


Step = Callable[[Run], Awaitable[Swap | None]]


def drive(
    swap_id: int,
    step: Step,
    *,
    claim: str | None = None,
    rq_job_id: str | None = None,
    takes_over: str | None = None,
) -> Outcome:
    """Run one step of an operation through the engine, as its only runner.

    Holds the operation's lease for the step (`takes_over`: the job id a previous runner
    handed its lease to). With `claim`, first moves the record Pending -> Swapping with
    that message (and `rq_job_id`, the job that will carry it on): if another runner
    claimed it, the step does not run. An engine error fails the operation with its
    message, routing as the engine left it. Another runner holding the lease means this
    one has nothing to do: the record as it stands.
    """

    async def operation(engine: fleet_state.Engine) -> Outcome:
        async with leases.hold(swap_id, takes_over=takes_over) as lease:
            recorder = Recorder(swap_id, engine.inflight)
            swapper = engine.swapper(policy=fleet_state.policy(), on_change=recorder)
            run = Run(swap_id, engine, swapper, recorder, lease)
            try:
                if claim is not None and not await sync_to_async(_claim)(swap_id, claim, rq_job_id):
                    return Outcome(await sync_to_async(load_swap)(swap_id))
                try:
                    return Outcome(await step(run))
                except SwapError as exc:
                    failed = await run.finish(state=Swap.State.FAILED, message=exc.message)
                    return Outcome(failed, from_engine(exc))
            finally:
                await recorder.flush()

    try:
        return fleet_state.run(operation)
    except leases.LeaseHeld:
        return Outcome(load_swap(swap_id))
    except Refused as exc:  # the lease or the fleet could not be reached: nothing ran
        return Outcome(finish(swap_id=swap_id, state=Swap.State.FAILED, message=exc.message), exc)


def _claim(swap_id: int, message: str, rq_job_id: str | None) -> bool:
    """Pending -> Swapping, for exactly one runner."""
    fields: dict[str, Any] = {"started_at": timezone.now()}
    if rq_job_id is not None:
        fields["rq_job_id"] = rq_job_id
    claimed = transition(
        swap_id=swap_id,
        state=Swap.State.SWAPPING,
        leaving=(Swap.State.PENDING,),
        message=message,
        **fields,
    )
    return claimed is not None
