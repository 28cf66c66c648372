"""ModelHotSwapper: the seed's IModelHotSwapper, with the route flipped before the drain.

The seed's swap lists "drain, then update routing"; under load that drain never ends,
because new requests keep arriving on the old version. So both workflows flip first and
drain after, as the seed's own rollback does (DESIGN.md, "The swap, as the fleet sees it").

Refusals (unknown model or version, same version, wrong source, a target that fails its
health check, another operation running) raise `SwapError` subclasses with nothing
changed. A failure after the workflow started (the coordination store going away) is a
result with `success=False` and the status Failed. Every transition is written to the
status board and handed to `on_change`, which is how the control plane records it.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from . import compatibility, errors
from .errors import (
    FleetUnavailable,
    IncompatibleVersion,
    InvalidSwap,
    LoadError,
    SwapConflict,
    SwapError,
    UnhealthyVersion,
    UnknownModel,
    UnknownVersion,
)
from .ports import InflightTracker, Router, StatusBoard, VersionManager
from .results import (
    DrainResult,
    HealthCheckResult,
    RollbackResult,
    SwapResult,
    SwapState,
    SwapStatus,
    counted,
    utcnow,
)
from .router import Split

log = logging.getLogger(__name__)

WARM = "not checked again: loaded and healthy everywhere since it was loaded"

Observer = Callable[[SwapStatus], Awaitable[None] | None]


@dataclass(frozen=True)
class SwapPolicy:
    drain_timeout: float = 30.0  # seconds a drain waits before reporting what remains
    keep_warm: float = 300.0  # seconds a left version stays loaded, so a rollback is instant
    status_interval: float = 0.25  # how often a drain publishes its pending count


class ModelHotSwapper:
    def __init__(
        self,
        *,
        versions: VersionManager,
        router: Router,
        inflight: InflightTracker,
        board: StatusBoard,
        policy: SwapPolicy | None = None,
        on_change: Observer | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._versions = versions
        self._router = router
        self._inflight = inflight
        self._board = board
        self.policy = policy or SwapPolicy()
        self._on_change = on_change
        self._clock = clock

    @classmethod
    def over(
        cls, ports: Any, *, policy: SwapPolicy | None = None, on_change: Observer | None = None
    ) -> ModelHotSwapper:
        """A swapper over anything holding the four ports as .versions .router .inflight
        .board: the in-process stack, the Redis fleet, the control plane's test engine."""
        return cls(
            versions=ports.versions,
            router=ports.router,
            inflight=ports.inflight,
            board=ports.board,
            policy=policy,
            on_change=on_change,
        )

    # -- the seed's contract ---------------------------------------------------------

    async def swap_version(
        self,
        model_id: str,
        from_version: str,
        to_version: str,
        *,
        drain_timeout: float | None = None,
        force: bool = False,
        operation_id: str = "",
    ) -> SwapResult:
        """Move the model's traffic from `from_version` to `to_version`.

        1. Validate: model and both versions exist, they differ (refusals raise).
        2. Claim the model: a running swap or rollback refuses this one at once.
        3. Check `from_version` is active, now that nobody else can change it.
        4. Load the target where it serves and health-check it; unhealthy: Failed,
           routing untouched, a target loaded only for this swap unloaded again.
           Likewise if it would break the source's clients (`compatibility`), unless
           `force`: then the flip's transition names what will break.
        5. Flip the route; from here no new unpinned request reaches the source.
        6. Drain the source, never cutting a request off, publishing pending counts.
        7. Unload the source after the keep-warm window; Completed.
        """
        await self._require_versions(model_id, from_version, to_version)
        if from_version == to_version:
            raise InvalidSwap(errors.SAME_VERSION.format(model_id=model_id, version=to_version))
        status, previous = await self._claim(
            model_id,
            operation="swap",
            current=from_version,
            target=to_version,
            message=f"checking version {to_version} before the swap",
            operation_id=operation_id,
        )
        await self._require_active(status, from_version, previous)
        return await self._run(status, self._swap(status, drain_timeout, force))

    async def rollback_version(
        self,
        model_id: str,
        target_version: str,
        *,
        drain_timeout: float | None = None,
        wait_for_drain: bool = True,
        operation_id: str = "",
    ) -> RollbackResult:
        """Route the model back to a version it served before, at once, then drain.

        1. Validate: the target exists, is not active, and has served this model.
        2. Claim the model (a running swap or rollback refuses this one).
        3. Keep the target if it is warm (still loaded within the keep-warm window and
           healthy everywhere since it was loaded: no second check); else load and
           check it. Flip the route immediately.
        4. Drain the version it left, then unload it after the keep-warm window.

        With `wait_for_drain=False` it returns right after step 3, the status Draining:
        the caller hands step 4 to `resume` elsewhere (a job), so the flip never waits
        behind a queue.
        """
        await self._require_versions(model_id, target_version)
        active = await self._router.active(model_id)
        if target_version == active:
            raise InvalidSwap(
                errors.ALREADY_ACTIVE.format(model_id=model_id, version=target_version)
            )
        if target_version not in await self._router.history(model_id):
            raise InvalidSwap(
                errors.NOT_SERVED_BEFORE.format(model_id=model_id, version=target_version)
            )
        status, previous = await self._claim(
            model_id,
            operation="rollback",
            current=active,
            target=target_version,
            message=f"rolling back to version {target_version}",
            operation_id=operation_id,
        )
        await self._require_active(status, active, previous)
        return await self._run(status, self._rollback(status, drain_timeout, wait_for_drain))

    async def check_version_health(self, model_id: str, version: str) -> HealthCheckResult:
        """Loaded, the sample inference ran, its output is as declared, memory in limits."""
        await self._require_versions(model_id, version)
        return await self._versions.check_health(model_id, version)

    async def drain_version(self, model_id: str, version: str, timeout: float) -> DrainResult:
        """Wait for the version's in-flight requests to finish; truthy when they did."""
        await self._require_versions(model_id, version)
        drain, _ = await self._drain(model_id, version, timeout, status=None)
        return drain

    async def get_swap_status(self, model_id: str) -> SwapStatus:
        """The model's swap status, with a live count of pending requests.

        Pending means in flight on the version being drained while a drain runs, and in
        flight on the active version otherwise.
        """
        if model_id not in await self._versions.models():
            raise UnknownModel(errors.UNKNOWN_MODEL.format(model_id=model_id))
        active = await self._router.active(model_id)
        status = await self._board.get(model_id)
        if status is None:
            pending = await self._inflight.pending(model_id, active) if active else 0
            return SwapStatus(
                model_id=model_id,
                current_version=active,
                target_version=None,
                state=SwapState.IDLE,
                start_time=None,
                pending_requests=pending,
            )
        if status.state is SwapState.DRAINING and status.previous_version:
            watched = status.previous_version
        else:
            watched = active
        pending = await self._inflight.pending(model_id, watched) if watched else 0
        return replace(status, pending_requests=pending)

    # -- beyond the seed ---------------------------------------------------------------

    async def deploy(self, model_id: str, version: str, *, operation_id: str = "") -> SwapResult:
        """Serve a model for the first time: load, health-check and route to `version`."""
        await self._require_versions(model_id, version)
        active = await self._router.active(model_id)
        if active is not None:
            raise InvalidSwap(errors.ALREADY_SERVING.format(model_id=model_id, active=active))
        status, previous = await self._claim(
            model_id,
            operation="deploy",
            current=None,
            target=version,
            message=f"deploying version {version}",
            operation_id=operation_id,
        )
        await self._require_active(status, None, previous)
        return await self._run(status, self._deploy(status))

    async def resume(self, model_id: str, *, drain_timeout: float | None = None) -> SwapStatus:
        """Carry the model's unfinished operation to a final state; return that state.

        For the second half of a rollback started with `wait_for_drain=False`, and for
        recovery after whoever ran an operation died: Draining drains and completes;
        Swapping completes if the route had already flipped, else fails with routing
        untouched. Only call it when nobody else is running the operation.
        """
        status = await self._board.get(model_id)
        if status is None or not status.state.running:
            return await self.get_swap_status(model_id)
        return await self._run(status, self._resume(status, drain_timeout))

    # -- rollouts: the steps a control plane drives ---------------------------------------

    async def begin_rollout(
        self,
        model_id: str,
        from_version: str,
        to_version: str,
        *,
        force: bool = False,
        operation_id: str = "",
    ) -> SwapStatus:
        """Claim the model for a rollout and load and check the candidate as a swap does.

        Returns the status, Swapping, with routing untouched: the caller moves traffic
        with `split_rollout` and ends it with `promote_rollout` or `abort_rollout`, or
        `resume` (after its runner died) sends all traffic back to the stable version.
        """
        await self._require_versions(model_id, from_version, to_version)
        if from_version == to_version:
            raise InvalidSwap(errors.SAME_VERSION.format(model_id=model_id, version=to_version))
        status, previous = await self._claim(
            model_id,
            operation="rollout",
            current=from_version,
            target=to_version,
            message=f"checking version {to_version} before the rollout",
            operation_id=operation_id,
        )
        await self._require_active(status, from_version, previous)
        return await self._run(status, self._begin_rollout(status, force))

    async def split_rollout(
        self, status: SwapStatus, weight: int, *, shadow: bool = False, message: str = ""
    ) -> SwapStatus:
        """Send `weight` percent of the unpinned requests to the candidate (a canary), or
        copies of that share of them (`shadow`); returns once every replica applied it.

        A weight the fleet could not take aborts the rollout (the status returned is
        Failed): a replica that missed it may hold either weight, and only the stable
        version's route is safe to leave behind."""
        split = Split(candidate=_candidate(status), weight=weight, shadow=shadow)
        stable = status.current_version
        assert stable is not None
        try:
            await self._router.flip(status.model_id, stable, split)
        except SwapError as exc:
            reason = f"the weight could not be set to {weight} %: {exc.message}"
            return await self.abort_rollout(status, reason)
        verb = "copied" if shadow else "routed"
        said = message or f"{weight} % of requests {verb} to version {split.candidate}"
        return await self._transition(status, message=said)

    async def promote_rollout(
        self, status: SwapStatus, *, drain_timeout: float | None = None, note: str = ""
    ) -> SwapStatus:
        """The rollout's end: all traffic to the candidate, the stable version drained
        and kept warm (an instant rollback can go back to it), Completed."""
        return await self._run(status, self._promote(status, drain_timeout, note))

    async def abort_rollout(
        self, status: SwapStatus, reason: str, *, drain_timeout: float | None = None
    ) -> SwapStatus:
        """All traffic back to the stable version at once, then the candidate's requests
        drained and the candidate unloaded: Failed, with `reason`."""
        return await self._run(status, self._abort(status, reason, drain_timeout))

    # -- workflows ----------------------------------------------------------------------

    async def _swap(
        self, status: SwapStatus, drain_timeout: float | None, force: bool
    ) -> SwapResult:
        model_id, source, target = status.model_id, status.current_version, status.target_version
        assert source is not None and target is not None
        problems = await self._prepare(status, target, clients_of=source, force=force)
        note = f"forced: it breaks clients: {'; '.join(problems)}" if problems else ""
        status = await self._flip(status, target, note=note)
        status, drain = await self._complete(status, drain_timeout)
        return SwapResult(
            success=True,
            message=status.message,
            start_time=status.start_time or status.end_time,
            end_time=status.end_time,
            requests_drained=drain.requests_drained,
            requests_remaining=drain.requests_remaining,
            model_id=model_id,
            from_version=source,
            to_version=target,
        )

    async def _rollback(
        self, status: SwapStatus, drain_timeout: float | None, wait_for_drain: bool
    ) -> RollbackResult:
        left, target = status.current_version, status.target_version
        assert target is not None
        began = time.perf_counter()
        # A version that stayed loaded and healthy everywhere needs no second check:
        # that check is most of an instant rollback's time.
        warm = await self._versions.keep_warm(status.model_id, target)
        if not warm:
            await self._prepare(status, target)
        status = await self._flip(status, target, note=WARM if warm else "")
        flip_seconds = time.perf_counter() - began
        rolled_back_at = self._clock()
        drained = 0
        if wait_for_drain:
            status, drain = await self._complete(status, drain_timeout)
            drained = drain.requests_drained
        return RollbackResult(
            success=True,
            message=status.message,
            rollback_time=rolled_back_at,
            previous_version=left or "",
            new_version=target,
            flip_seconds=flip_seconds,
            requests_drained=drained,
            requests_remaining=status.pending_requests,
        )

    async def _deploy(self, status: SwapStatus) -> SwapResult:
        target = status.target_version
        assert target is not None
        await self._prepare(status, target)
        status = await self._flip(status, target)
        status, _ = await self._complete(status, None)
        return SwapResult(
            success=True,
            message=status.message,
            start_time=status.start_time or status.end_time,
            end_time=status.end_time,
            requests_drained=0,
            requests_remaining=0,
            model_id=status.model_id,
            from_version="",
            to_version=target,
        )

    async def _begin_rollout(self, status: SwapStatus, force: bool) -> SwapStatus:
        candidate = _candidate(status)
        problems = await self._prepare(
            status, candidate, clients_of=status.current_version, force=force
        )
        said = f"version {candidate} loaded and healthy everywhere"
        if problems:
            said += f" (forced: it breaks clients: {'; '.join(problems)})"
        return await self._transition(status, message=said)

    async def _promote(
        self, status: SwapStatus, drain_timeout: float | None, note: str
    ) -> SwapStatus:
        status = await self._flip(status, _candidate(status), note=note)
        status, _ = await self._complete(status, drain_timeout)
        return status

    async def _abort(
        self, status: SwapStatus, reason: str, drain_timeout: float | None
    ) -> SwapStatus:
        model_id, candidate, stable = status.model_id, _candidate(status), status.current_version
        assert stable is not None
        began = time.perf_counter()
        if await self._router.split(model_id) is not None:
            await self._router.flip(model_id, stable)
        flipped = time.perf_counter() - began
        status = await self._transition(
            status,
            message=f"{reason}; all traffic back on version {stable} in {flipped:.2f} s; "
            f"draining version {candidate}",
            pending_requests=await self._inflight.pending(model_id, candidate),
        )
        drain, status = await self._drain(
            model_id, candidate, self._timeout(drain_timeout), status=status
        )
        await self._versions.unload(model_id, candidate)
        ended = (
            f"{reason}; all traffic back on version {stable} in {flipped:.2f} s; "
            f"{counted(drain.requests_drained, 'request')} on version {candidate} drained"
        )
        if not drain.drained:
            ended += f", {counted(drain.requests_remaining, 'request')} still running there"
        return await self._finish(status, SwapState.FAILED, ended, drain)

    async def _resume(self, status: SwapStatus, drain_timeout: float | None) -> SwapStatus:
        if status.state is SwapState.SWAPPING and status.operation == "rollout":
            # Never left at a weight nobody drives: back to the stable version.
            return await self._abort(status, "interrupted before the rollout ended", drain_timeout)
        if status.state is SwapState.SWAPPING:
            active = await self._router.active(status.model_id)
            if active != status.target_version:
                message = (
                    f"interrupted before the route flipped; version {active} still serves "
                    f"model {status.model_id!r}"
                )
                return await self._finish(status, SwapState.FAILED, message, None)
            # The route flipped but the Draining transition was never recorded: the drain
            # counts from now, as the completed count at the flip is lost.
            status = await self._enter_drain(
                replace(status, current_version=active), completed_at_flip=None
            )
        status, _ = await self._complete(status, drain_timeout)
        return status

    async def _run(self, status: SwapStatus, workflow: Awaitable):
        """Run a claimed workflow so that it always ends in a final state.

        A refusal found along the way (an unhealthy target) is already recorded as
        Failed and propagates; the coordination store failing becomes a failed result;
        anything else (a bug, a cancelled task) is recorded as Failed and propagates.
        """
        try:
            return await workflow
        except SwapError as exc:
            latest = await self._board.get(status.model_id) or status
            if latest.state.running:
                latest = await self._finish(latest, SwapState.FAILED, exc.message, None)
            if isinstance(exc, FleetUnavailable):
                return self._failed_result(latest, exc.message)
            raise
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            try:
                latest = await self._board.get(status.model_id) or status
                await self._finish(latest, SwapState.FAILED, f"interrupted: {reason}", None)
            except Exception:  # the original error matters more than this one
                log.exception("could not record the failure of %s", status)
            raise

    def _failed_result(self, status: SwapStatus, message: str) -> SwapResult | RollbackResult:
        now = self._clock()
        if status.operation == "rollback":
            return RollbackResult(
                success=False,
                message=message,
                rollback_time=now,
                previous_version=status.previous_version or "",
                new_version=status.target_version or "",
            )
        return SwapResult(
            success=False,
            message=message,
            start_time=status.start_time or now,
            end_time=status.end_time or now,
            requests_drained=0,
            requests_remaining=status.pending_requests,
            model_id=status.model_id,
            from_version=status.previous_version or "",
            to_version=status.target_version or "",
        )

    # -- steps --------------------------------------------------------------------------

    async def _flip(self, status: SwapStatus, target: str, *, note: str = "") -> SwapStatus:
        """Route the model to `target`; from here the left version only drains."""
        await self._router.flip(status.model_id, target)
        source = status.previous_version
        if source is None:
            return replace(status, current_version=target)
        baseline = await self._inflight.completed(status.model_id, source)
        return await self._enter_drain(
            replace(status, current_version=target), completed_at_flip=baseline, note=note
        )

    async def _enter_drain(
        self, status: SwapStatus, *, completed_at_flip: int | None, note: str = ""
    ) -> SwapStatus:
        source = status.previous_version
        assert source is not None
        verb = "rolled back" if status.operation == "rollback" else "route flipped"
        flipped = f"{verb} to version {status.current_version}" + (f" ({note})" if note else "")
        return await self._transition(
            status,
            state=SwapState.DRAINING,
            pending_requests=await self._inflight.pending(status.model_id, source),
            completed_at_flip=completed_at_flip,
            message=f"{flipped}; draining version {source}",
        )

    async def _complete(
        self, status: SwapStatus, drain_timeout: float | None
    ) -> tuple[SwapStatus, DrainResult]:
        """Drain the version the operation left, schedule its unload, mark Completed."""
        model_id, source, target = status.model_id, status.previous_version, status.current_version
        assert target is not None
        if source is None:
            drain = DrainResult(model_id, "", True, 0, 0, 0.0)
            message = f"version {target} of model {model_id!r} is serving"
        else:
            drain, status = await self._drain(
                model_id,
                source,
                self._timeout(drain_timeout),
                status=status,
                completed_before=status.completed_at_flip,
            )
            await self._versions.unload(model_id, source, after=self.policy.keep_warm)
            verb = "rolled back" if status.operation == "rollback" else "swapped"
            message = _finished(verb, source, target, drain)
        return await self._finish(status, SwapState.COMPLETED, message, drain), drain

    async def _prepare(
        self,
        status: SwapStatus,
        version: str,
        *,
        clients_of: str | None = None,
        force: bool = False,
    ) -> list[str]:
        """Load `version` where it serves and check it; refuse it if unhealthy, or if it
        would break the clients of `clients_of` (unless `force`: return what breaks)."""
        model_id = status.model_id
        was_loaded = await self._versions.is_loaded(model_id, version)
        try:
            await self._versions.load(model_id, version)
        except LoadError as exc:
            health = HealthCheckResult.failure(
                model_id=model_id, version=version, reason=exc.message
            )
        else:
            health = await self._versions.check_health(model_id, version)
        refusal: SwapError | None = None
        problems: list[str] = []
        if not health.healthy:
            message = errors.UNHEALTHY.format(
                model_id=model_id, version=version, reason=health.reason
            )
            refusal = UnhealthyVersion(message, health)
        elif clients_of is not None:
            problems = await self._incompatibilities(model_id, clients_of, version)
            if problems and not force:
                message = errors.INCOMPATIBLE.format(
                    model_id=model_id,
                    version=version,
                    active=clients_of,
                    problems="; ".join(problems),
                )
                refusal = IncompatibleVersion(message, problems)
        if refusal is None:
            return problems
        if not was_loaded:
            await self._versions.unload(model_id, version)
        await self._finish(status, SwapState.FAILED, refusal.message, None)
        raise refusal

    async def _incompatibilities(self, model_id: str, active: str, target: str) -> list[str]:
        """How the target would break the clients of `active` (both loaded everywhere)."""
        before = await self._versions.signature(model_id, active)
        after = await self._versions.signature(model_id, target)
        if after is None:
            return [errors.UNDESCRIBED.format(version=target)]
        if before is None:
            return [errors.UNDESCRIBED.format(version=active)]
        return compatibility.differences(before, after)

    async def _drain(
        self,
        model_id: str,
        version: str,
        timeout: float,
        *,
        status: SwapStatus | None,
        completed_before: int | None = None,
    ) -> tuple[DrainResult, SwapStatus | None]:
        """Wait for `version` to drain; count what completed since `completed_before`.

        Swaps pass the count taken right after the flip, so the requests that were in
        flight at the flip and finished before the drain loop started count as drained.
        """
        started = time.monotonic()
        if completed_before is None:
            completed_before = await self._inflight.completed(model_id, version)
        remaining = await self._inflight.pending(model_id, version)
        if status is not None and remaining != status.pending_requests:
            status = await self._transition(status, pending_requests=remaining)
        while True:
            left = timeout - (time.monotonic() - started)
            if remaining == 0 or left <= 0:
                break
            step = min(self.policy.status_interval, left)
            remaining = await self._inflight.wait_drained(model_id, version, step)
            if status is not None and remaining != status.pending_requests:
                status = await self._transition(status, pending_requests=remaining)
        completed_after = await self._inflight.completed(model_id, version)
        result = DrainResult(
            model_id=model_id,
            version=version,
            drained=remaining == 0,
            requests_drained=max(completed_after - completed_before, 0),
            requests_remaining=remaining,
            waited_seconds=time.monotonic() - started,
        )
        return result, status

    async def _claim(
        self,
        model_id: str,
        *,
        operation: str,
        current: str | None,
        target: str,
        message: str,
        operation_id: str,
    ) -> tuple[SwapStatus, SwapStatus | None]:
        """Claim the model for an operation; return its status and the one it replaced."""
        status = SwapStatus(
            model_id=model_id,
            current_version=current,
            target_version=target,
            state=SwapState.SWAPPING,
            start_time=self._clock(),
            pending_requests=0,
            operation=operation,
            message=message,
            previous_version=current,
            operation_id=operation_id,
        )
        previous = await self._board.get(model_id)
        running = await self._board.begin(status)
        if running is not None:
            raise SwapConflict(
                errors.IN_PROGRESS.format(
                    operation=running.operation or "swap",
                    model_id=model_id,
                    from_version=running.previous_version,
                    to_version=running.target_version,
                    state=running.state.value,
                )
            )
        return status, previous

    async def _require_active(
        self, status: SwapStatus, version: str | None, previous: SwapStatus | None
    ) -> None:
        """Under the claim, check the source is still active; else give the claim back."""
        active = await self._router.active(status.model_id)
        if active == version:
            await self._notify(status)
            return
        # Someone changed the route between our validation and our claim.
        await self._board.put(
            previous
            or SwapStatus(
                model_id=status.model_id,
                current_version=active,
                target_version=None,
                state=SwapState.IDLE,
                start_time=None,
                pending_requests=0,
            )
        )
        if active is None:
            raise InvalidSwap(errors.NO_ACTIVE_VERSION.format(model_id=status.model_id))
        if version is None:
            message = errors.ALREADY_SERVING.format(model_id=status.model_id, active=active)
            raise InvalidSwap(message)
        raise InvalidSwap(
            errors.NOT_ACTIVE.format(model_id=status.model_id, version=version, active=active)
        )

    async def _require_versions(self, model_id: str, *versions: str) -> None:
        if model_id not in await self._versions.models():
            raise UnknownModel(errors.UNKNOWN_MODEL.format(model_id=model_id))
        known = await self._versions.versions(model_id)
        for version in versions:
            if version not in known:
                raise UnknownVersion(
                    errors.UNKNOWN_VERSION.format(model_id=model_id, version=version)
                )

    async def _transition(self, status: SwapStatus, **changes) -> SwapStatus:
        status = replace(status, **changes)
        await self._board.put(status)
        await self._notify(status)
        return status

    async def _finish(
        self, status: SwapStatus, state: SwapState, message: str, drain: DrainResult | None
    ) -> SwapStatus:
        return await self._transition(
            status,
            state=state,
            message=message,
            end_time=self._clock(),
            pending_requests=drain.requests_remaining if drain else status.pending_requests,
        )

    async def _notify(self, status: SwapStatus) -> None:
        if self._on_change is None:
            return
        try:
            outcome = self._on_change(status)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            # An observer (the control plane's record, a broadcast) failing must not
            # strand a swap half-way; the board still holds the truth.
            log.exception("on_change observer failed for %s", status)

    def _timeout(self, drain_timeout: float | None) -> float:
        return self.policy.drain_timeout if drain_timeout is None else drain_timeout


def _finished(verb: str, source: str, target: str, drain: DrainResult) -> str:
    if drain.drained:
        return (
            f"{verb} from version {source} to {target}; "
            f"{counted(drain.requests_drained, 'request')} drained in {drain.waited_seconds:.2f} s"
        )
    return (
        f"{verb} from version {source} to {target}; the drain timed out after "
        f"{drain.waited_seconds:.2f} s with {counted(drain.requests_remaining, 'request')} still "
        f"running on version {source}: they finish there, and it unloads once they have"
    )


def _candidate(status: SwapStatus) -> str:
    assert status.target_version is not None
    return status.target_version
