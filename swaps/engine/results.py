"""The values the engine hands back: the seed's result classes, as frozen dataclasses.

Every timestamp is timezone-aware UTC.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def counted(count: int, noun: str, plural: str = "") -> str:
    """'1 request', '2 requests': every message that counts something says it right."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


class SwapState(enum.StrEnum):
    IDLE = "idle"
    SWAPPING = "swapping"
    DRAINING = "draining"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def running(self) -> bool:
        return self in (SwapState.SWAPPING, SwapState.DRAINING)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _AsDict:
    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO-8601 times, enum values)."""
        return _plain(asdict(self))  # type: ignore[call-overload]


@dataclass(frozen=True)
class SwapResult(_AsDict):
    success: bool
    message: str
    start_time: datetime
    end_time: datetime
    requests_drained: int
    requests_remaining: int
    model_id: str = ""
    from_version: str = ""
    to_version: str = ""


@dataclass(frozen=True)
class RollbackResult(_AsDict):
    success: bool
    message: str
    rollback_time: datetime
    previous_version: str
    new_version: str
    # How long the route flip took, from the call to every serving path routing to
    # new_version (the "instant" in instant rollback), and the drain that followed.
    flip_seconds: float = 0.0
    requests_drained: int = 0
    requests_remaining: int = 0


@dataclass(frozen=True)
class SwapStatus(_AsDict):
    model_id: str
    current_version: str | None
    target_version: str | None
    state: SwapState
    start_time: datetime | None
    pending_requests: int
    # Which operation owns the state ("swap" or "rollback") and what it last said.
    operation: str = ""
    message: str = ""
    end_time: datetime | None = None
    # The version the operation leaves (whose requests drain after the flip).
    previous_version: str | None = None
    # previous_version's completed-request count at the flip, so a drain resumed by
    # another process still counts the requests drained since the flip.
    completed_at_flip: int | None = None
    # The caller's name for the operation (the control plane's record id): how a runner
    # that takes over tells this operation's final status from an earlier one's, with
    # no clock compared across hosts.
    operation_id: str = ""


@dataclass(frozen=True)
class HealthCheckResult(_AsDict):
    model_id: str
    version: str
    healthy: bool
    loaded: bool
    inference_ran: bool
    output_valid: bool
    memory_within_limit: bool
    latency_ms: float | None
    memory_bytes: int | None
    memory_limit_bytes: int | None
    reason: str  # "" when healthy; otherwise the first thing that failed, in words
    checked_at: datetime
    output_shape: tuple[int, ...] | None = None
    output_dtype: str | None = None
    # Which serving process ran the check ("local" in-process; a replica id in a fleet).
    replica: str = "local"

    @classmethod
    def failure(
        cls,
        *,
        model_id: str,
        version: str,
        reason: str,
        replica: str = "local",
        loaded: bool = False,
        memory_bytes: int | None = None,
        memory_limit_bytes: int | None = None,
    ) -> HealthCheckResult:
        """A check that failed before the sample inference could tell anything."""
        return cls(
            model_id=model_id,
            version=version,
            healthy=False,
            loaded=loaded,
            inference_ran=False,
            output_valid=False,
            memory_within_limit=False,
            latency_ms=None,
            memory_bytes=memory_bytes,
            memory_limit_bytes=memory_limit_bytes,
            reason=reason,
            checked_at=utcnow(),
            replica=replica,
        )


@dataclass(frozen=True)
class DrainResult(_AsDict):
    """Whether a version drained, and the counts behind the answer.

    Truthy exactly when the drain finished inside its timeout, so it still answers the
    seed's `Task<bool> DrainVersion` question.
    """

    model_id: str
    version: str
    drained: bool
    requests_drained: int
    requests_remaining: int
    waited_seconds: float

    def __bool__(self) -> bool:
        return self.drained
