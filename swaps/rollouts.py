"""Rollouts: a swap in steps, the candidate judged on live traffic, aborted by itself.

A rollout is an operation of its model like a swap or a rollback (one at a time per
model: its Swap row, kind "rollout", holds the claim, the state and the transitions;
its Rollout row, the same id, the plan and where it stands). `start_rollout` accepts
one and queues its job; `run_rollout` is that job: the engine loads and checks the
candidate as a swap does, then each step sets the candidate's share of the unpinned
requests fleet-wide (one flip, acknowledged by every replica), holds it for its pause
(or until a person promotes), and every LOOK_SECONDS judges the step's traffic so far
(rollout_analysis.py). A failed check, or a person's abort, sends all traffic back to
the stable version at once and ends the rollout Failed with the figures. After the
last step the candidate takes everything, and the rollout ends as a swap does.

A runner that dies mid-rollout is recovered by the sweep like any operation: the
engine's `resume` routes everything back to the stable version (never a weight nobody
drives), and the record says so.

The job holds one RQ worker for the rollout's whole length: run one worker more than
the rollouts you expect at once, or swaps of other models wait behind them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from swaps import audit, fleet_state, job_queue, lifecycle, permissions, rollout_analysis
from swaps.engine.fleet_keys import REDIS_DOWN
from swaps.engine.results import SwapState, SwapStatus
from swaps.lifecycle import Run
from swaps.models import Rollout, Swap
from swaps.refusals import Conflict, Forbidden, NotFound, invalid_fields
from swaps.registry import UNKNOWN_VERSION, get_model

# How often a running step is judged and a person's promotion or abort looked for: the
# bound on how late an automatic abort comes after the evidence is in.
LOOK_SECONDS = 0.25
MAX_STEPS = 20
MAX_PAUSE = 7 * 24 * 3600.0

STEPS = (
    'must be a list of 1-{max} steps, each {{"weight": 1-100, "pause": seconds or null}}, '
    "the weights rising"
)
MODES = "must be 'canary' or 'shadow'"
NO_SHADOW_YET = (
    "shadow mode copies requests to the candidate, which replicas do not do yet: use canary"
)
NOT_SERVING = "model {model!r} serves no version yet: deploy one before a rollout"
SAME = "version {version!r} already serves model {model!r}"
UNKNOWN_ROLLOUT = "rollout {rollout_id} does not exist"
NOT_RUNNING = "rollout {rollout_id} is {state}: only a running rollout can be {verb}"
NO_MORE_STEPS = "rollout {rollout_id} was promoted all the way already: it is completing"
OWN_APPROVAL = "{user} started rollout {rollout_id}: someone else must approve it"
NO_APPROVAL_NEEDED = "rollout {rollout_id} of model {model!r} needs no approval"
ALREADY_APPROVED = "rollout {rollout_id} was approved by {user} already"
ABORT_REASON = "say why (1-500 characters): it goes into the record and the audit log"

QUEUED_STEP = "step {number} of {steps}: {weight} % of requests routed to version {candidate}"
HOLD_FOR = " for {pause:g} s"
HOLD_UNTIL = " until promoted"
WAITING_APPROVAL = (
    "step 1 ended; model {model!r} needs a second person's approval to go past it: waiting for one"
)
WAITING_REQUESTS = "step {number} held past its pause: {have} of the {need} requests to judge"
STEP_PASSED = "step {number} passed its analysis: {summary}"
PROMOTED = "promoted by {user} to {where}"
APPROVED = "approved by {user}: the rollout may go past its first step"
ABORTED_BY = "aborted by {user}: {reason}"


# -- accepting one --------------------------------------------------------------------------


def start_rollout(
    *,
    model: str,
    to_version: Any,
    steps: Any,
    user: permissions.User,
    via: str,
    mode: Any = "canary",
    analysis: Any = None,
) -> Swap:
    """Accept a rollout of `model` from its active version to `to_version`; queue its job.

    Refusals (no permission, bad steps or thresholds, unknown or unusable version,
    another operation running) change nothing but the audit log.
    """
    with audit.attempt(
        actor=user,
        via=via,
        action=audit.START_ROLLOUT,
        model=model,
        to_version=to_version if isinstance(to_version, str) else "",
        details={"steps": steps, "mode": mode, "analysis": analysis},
    ) as record:
        permissions.require(user, permissions.START_SWAP, action="start a rollout")
        served = get_model(model)
        plan, thresholds = _check_plan(steps, mode, analysis)
        active = served.active_version
        problems: dict[str, str] = {}
        target = None
        if not isinstance(to_version, str) or not to_version:
            problems["to_version"] = "must be a version name, a string"
        elif (target := served.versions.filter(version=to_version).first()) is None:
            problems["to_version"] = UNKNOWN_VERSION.format(model=served.name, version=to_version)
        elif (problem := lifecycle.target_problem(served, target)) is not None:
            problems["to_version"] = problem
        elif active is None:
            problems["to_version"] = NOT_SERVING.format(model=served.name)
        elif active.pk == target.pk:
            problems["to_version"] = SAME.format(model=served.name, version=to_version)
        if problems:
            raise invalid_fields(problems)
        try:
            with transaction.atomic():
                swap = lifecycle.create_operation(
                    served=served, kind=Swap.Kind.ROLLOUT, source=active, target=target, user=user
                )
                Rollout.objects.create(swap=swap, mode=mode, steps=plan, analysis=thresholds)
                job_queue.enqueue_rollout(swap)
                record.accepted(swap=swap.pk, kind=Swap.Kind.ROLLOUT, from_version=active.version)
        except REDIS_DOWN as exc:
            return lifecycle.finish(
                swap_id=swap.pk,
                state=Swap.State.FAILED,
                message=f"its job could not be queued ({exc}); nothing was changed: try again",
            )
    return lifecycle.load_swap(swap.pk)


def _check_plan(steps: Any, mode: Any, analysis: Any) -> tuple[list[dict], dict]:
    problems: dict[str, str] = {}
    plan = _steps(steps)
    if plan is None:
        problems["steps"] = STEPS.format(max=MAX_STEPS)
    if mode not in Rollout.Mode.values:
        problems["mode"] = MODES
    elif mode == Rollout.Mode.SHADOW:
        problems["mode"] = NO_SHADOW_YET
    thresholds = dict(rollout_analysis.DEFAULTS) if analysis is None else analysis
    for name, problem in rollout_analysis.threshold_problems(thresholds).items():
        problems[name if name == "analysis" else f"analysis.{name}"] = problem
    if problems:
        raise invalid_fields(problems)
    assert plan is not None
    return plan, thresholds


def _steps(steps: Any) -> list[dict] | None:
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        return None
    plan, last = [], 0
    for step in steps:
        if not isinstance(step, dict) or set(step) - {"weight", "pause"}:
            return None
        weight, pause = step.get("weight"), step.get("pause")
        if isinstance(weight, bool) or not isinstance(weight, int) or not last < weight <= 100:
            return None
        if pause is not None and (
            isinstance(pause, bool)
            or not isinstance(pause, int | float)
            or not 0 <= pause <= MAX_PAUSE
        ):
            return None
        plan.append({"weight": weight, "pause": pause})
        last = weight
    return plan


# -- what a person does to a running one ----------------------------------------------------


def get_rollout(rollout_id: int) -> Rollout:
    rollout = (
        Rollout.objects.select_related(
            "swap__served_model", "swap__from_version", "swap__to_version", "swap__requested_by"
        )
        .filter(pk=rollout_id)
        .first()
    )
    if rollout is None:
        raise NotFound(UNKNOWN_ROLLOUT.format(rollout_id=rollout_id))
    return rollout


def promote(*, rollout_id: int, user: permissions.User, via: str, full: bool = False) -> Rollout:
    """Go on to the next step now (or, `full`, to the end): the runner takes it within
    LOOK_SECONDS. Where the model needs approval, that still holds at the first step."""
    with _attempt(audit.PROMOTE_ROLLOUT, rollout_id, user, via, full=full) as (record, rollout):
        permissions.require(user, permissions.START_SWAP, action="promote a rollout")
        _require_running(rollout, "promoted")
        if rollout.swap.state == Swap.State.DRAINING:
            raise Conflict(NO_MORE_STEPS.format(rollout_id=rollout_id))
        where = len(rollout.steps) if full else min(max(rollout.step, 0) + 1, len(rollout.steps))
        said = "the end" if where >= len(rollout.steps) else f"step {where + 1}"
        with transaction.atomic():
            Rollout.objects.filter(pk=rollout_id).update(promote_to=where, promoted_by=user)
            lifecycle.transition(
                swap_id=rollout_id, message=PROMOTED.format(user=audit.actor_name(user), where=said)
            )
            record.accepted(promote_to=where)
    return get_rollout(rollout_id)


def approve(*, rollout_id: int, user: permissions.User, via: str) -> Rollout:
    """A second person lets a rollout of an approval-gated model past its first step."""
    with _attempt(audit.APPROVE_ROLLOUT, rollout_id, user, via) as (record, rollout):
        permissions.require(user, permissions.APPROVE_ROLLBACK, action="approve a rollout")
        _require_running(rollout, "approved")
        swap = rollout.swap
        if not swap.served_model.rollback_requires_approval:
            raise Conflict(
                NO_APPROVAL_NEEDED.format(rollout_id=rollout_id, model=swap.served_model.name)
            )
        if swap.requested_by_id == user.pk:
            raise Forbidden(OWN_APPROVAL.format(user=user.get_username(), rollout_id=rollout_id))
        if rollout.approved_by_id is not None:
            raise Conflict(
                ALREADY_APPROVED.format(
                    rollout_id=rollout_id, user=audit.actor_name(rollout.approved_by)
                )
            )
        with transaction.atomic():
            Rollout.objects.filter(pk=rollout_id, approved_by__isnull=True).update(
                approved_by=user, approved_at=timezone.now()
            )
            lifecycle.transition(
                swap_id=rollout_id, message=APPROVED.format(user=audit.actor_name(user))
            )
            record.accepted()
    return get_rollout(rollout_id)


def abort(*, rollout_id: int, user: permissions.User, via: str, reason: Any) -> Rollout:
    """Send all traffic back to the stable version: the runner does it within
    LOOK_SECONDS; a rollout not started yet ends at once."""
    with _attempt(audit.ABORT_ROLLOUT, rollout_id, user, via, reason=reason) as (record, rollout):
        permissions.require(user, permissions.START_SWAP, action="abort a rollout")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
            raise invalid_fields({"reason": ABORT_REASON})
        _require_running(rollout, "aborted")
        said = ABORTED_BY.format(user=audit.actor_name(user), reason=reason.strip())
        with transaction.atomic():
            Rollout.objects.filter(pk=rollout_id).update(abort_reason=said, aborted_by=user)
            record.accepted()
        # Not started: nothing was routed, so nothing has to go back.
        lifecycle.transition(
            swap_id=rollout_id,
            state=Swap.State.FAILED,
            leaving=(Swap.State.PENDING,),
            message=said + "; it had not started: nothing was routed to it",
        )
    return get_rollout(rollout_id)


class _attempt:
    """audit.attempt for an action on one rollout, which it loads (refusing an unknown id)."""

    def __init__(self, action: str, rollout_id: int, user, via: str, **details: Any) -> None:
        self._about = audit.attempt(
            actor=user, via=via, action=action, details={"rollout": rollout_id, **details}
        )
        self._rollout_id = rollout_id

    def __enter__(self) -> tuple[audit.Attempt, Rollout]:
        record = self._about.__enter__()
        try:
            rollout = get_rollout(self._rollout_id)
        except BaseException as exc:
            if not self._about.__exit__(type(exc), exc, exc.__traceback__):
                raise
        swap = rollout.swap
        record.model = swap.served_model.name
        record.from_version = swap.from_version.version if swap.from_version else ""
        record.to_version = swap.to_version.version
        return record, rollout

    def __exit__(self, *exc_info) -> bool | None:
        return self._about.__exit__(*exc_info)


def _require_running(rollout: Rollout, verb: str) -> None:
    if not rollout.swap.is_running:
        raise Conflict(
            NOT_RUNNING.format(rollout_id=rollout.pk, state=rollout.swap.state, verb=verb)
        )


# -- running it -----------------------------------------------------------------------------


def run_rollout(*, swap_id: int) -> Swap:
    """The rollout job's body: check the candidate, run the steps, promote or abort.

    Idempotent: a retry of a job whose rollout already left Pending does nothing.
    """
    swap = lifecycle.load_swap(swap_id)
    if swap.state != Swap.State.PENDING:
        return swap
    rollout = Rollout.objects.get(pk=swap_id)
    model_id = swap.served_model.name
    stable, candidate = swap.from_version.version, swap.to_version.version
    specs = fleet_state.specs_of([swap.from_version, swap.to_version])
    gated = swap.served_model.rollback_requires_approval

    async def step(run: Run) -> Swap:
        await fleet_state.ensure_specs(run.engine, specs)
        status = await run.swapper.begin_rollout(
            model_id, stable, candidate, operation_id=run.operation_id
        )
        runner = _Runner(run, rollout, status, model_id, stable, candidate, gated)
        return await runner.run()

    return lifecycle.drive(swap_id, step, claim="started by a worker").swap


class _Runner:
    def __init__(
        self, run: Run, rollout: Rollout, status: SwapStatus, model_id, stable, candidate, gated
    ) -> None:
        self.run, self.rollout, self.status = run, rollout, status
        self.model_id, self.stable, self.candidate, self.gated = model_id, stable, candidate, gated
        self.steps = rollout.steps
        self.thresholds = rollout.analysis

    async def run(self) -> Swap:
        index = 0
        while index < len(self.steps):
            weight, pause = self.steps[index]["weight"], self.steps[index]["pause"]
            if weight == 100:
                break  # the last step is the end: all traffic to the candidate
            message = QUEUED_STEP.format(
                number=index + 1, steps=len(self.steps), weight=weight, candidate=self.candidate
            ) + (HOLD_FOR.format(pause=pause) if pause is not None else HOLD_UNTIL)
            self.status = await self.run.swapper.split_rollout(self.status, weight, message=message)
            if self.status.state is SwapState.FAILED:
                return await self._ended()
            await self.run.recorder.flush()
            await sync_to_async(_entered_step)(self.rollout.pk, index, weight)
            index = await self._hold(index, pause)
            if index < 0:
                return await self._ended()
        await sync_to_async(_entered_step)(self.rollout.pk, len(self.steps) - 1, 100)
        self.status = await self.run.swapper.promote_rollout(self.status)
        return await self._ended()

    async def _hold(self, index: int, pause: float | None) -> int:
        """Hold step `index` until it ends; return the next step's index, or -1: aborted."""
        before = rollout_analysis.baseline(await self.run.engine.replicas())
        began = time.monotonic()
        passed = told_waiting = told_approval = False
        while True:
            verdict = rollout_analysis.judge(
                self.thresholds,
                before,
                await self.run.engine.replicas(),
                model=self.model_id,
                stable=self.stable,
                candidate=self.candidate,
            )
            if verdict.failed:
                await self._abort(verdict.failure(self.stable, self.candidate), verdict)
                return -1
            controls = await sync_to_async(_controls)(self.rollout.pk, verdict)
            if controls.abort_reason:
                await self._abort(controls.abort_reason, verdict)
                return -1
            if verdict.judged and not passed and verdict.checks:
                passed = True
                said = STEP_PASSED.format(
                    number=index + 1, summary=verdict.summary(self.stable, self.candidate)
                )
                await sync_to_async(_note)(self.rollout.pk, said, audit.ROLLOUT_VERDICT, verdict)
            ended = controls.promote_to is not None and controls.promote_to > index
            if not ended and pause is not None and time.monotonic() - began >= pause:
                if verdict.judged or not verdict.checks:
                    ended = True
                elif not told_waiting:
                    told_waiting = True
                    said = WAITING_REQUESTS.format(
                        number=index + 1,
                        have=verdict.candidate.requests,
                        need=verdict.min_requests,
                    )
                    await sync_to_async(_note)(self.rollout.pk, said)
            if ended and index == 0 and self.gated and controls.approved_by_id is None:
                ended = False
                if not told_approval:
                    told_approval = True
                    await sync_to_async(_note)(
                        self.rollout.pk, WAITING_APPROVAL.format(model=self.model_id)
                    )
            if ended:
                if controls.promote_to is not None and controls.promote_to > index:
                    return controls.promote_to
                return index + 1
            await asyncio.sleep(LOOK_SECONDS)

    async def _abort(self, reason: str, verdict: rollout_analysis.Verdict) -> None:
        await sync_to_async(_keep_verdict)(self.rollout.pk, verdict)
        self.status = await self.run.swapper.abort_rollout(self.status, reason)

    async def _ended(self) -> Swap:
        completed = self.status.state is SwapState.COMPLETED
        await self.run.recorder.flush()
        swap = await self.run.finish(
            state=Swap.State.COMPLETED if completed else Swap.State.FAILED,
            message=self.status.message,
        )
        await sync_to_async(_ended)(self.rollout.pk, completed)
        return swap


def _entered_step(rollout_id: int, index: int, weight: int) -> None:
    """The fleet applied the step's weight (every replica acknowledged it): record it."""
    with transaction.atomic():
        Rollout.objects.filter(pk=rollout_id).update(
            step=index, weight=weight, step_started_at=timezone.now()
        )
        rollout = get_rollout(rollout_id)
        swap = rollout.swap
        audit.audit(
            actor="engine",
            via="worker",
            action=audit.ROLLOUT_STEP,
            outcome="accepted",
            model=swap.served_model.name,
            from_version=swap.from_version.version,
            to_version=swap.to_version.version,
            details={"rollout": rollout_id, "step": index + 1, "weight": weight},
        )


def _controls(rollout_id: int, verdict: rollout_analysis.Verdict) -> Rollout:
    """What people asked of the rollout since the last look; the latest figures kept."""
    _keep_verdict(rollout_id, verdict)
    return Rollout.objects.get(pk=rollout_id)


def _keep_verdict(rollout_id: int, verdict: rollout_analysis.Verdict) -> None:
    Rollout.objects.filter(pk=rollout_id).update(verdict=verdict.as_dict())


def _note(
    rollout_id: int,
    message: str,
    action: str = "",
    verdict: rollout_analysis.Verdict | None = None,
) -> None:
    with transaction.atomic():
        swap = lifecycle.transition(swap_id=rollout_id, message=message)
        if swap is not None and action:
            audit.audit(
                actor="engine",
                via="worker",
                action=action,
                outcome="accepted",
                model=swap.served_model.name,
                from_version=swap.from_version.version,
                to_version=swap.to_version.version,
                details={
                    "rollout": rollout_id,
                    "message": message,
                    **({"verdict": verdict.as_dict()} if verdict else {}),
                },
            )


def _ended(rollout_id: int, completed: bool) -> None:
    Rollout.objects.filter(pk=rollout_id).update(weight=100 if completed else 0)
