"""Why the engine refuses or fails an operation, as exceptions the caller can show.

Every refusal is raised before anything changes (routing untouched, nothing loaded or
unloaded), so a caller can turn it into a 4xx or a CLI error line as it is. `code`
names the kind of refusal for an API: "not_found", "invalid", "conflict", "unhealthy".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results import HealthCheckResult

UNKNOWN_MODEL = "model {model_id!r} does not exist"
UNKNOWN_VERSION = "version {version!r} of model {model_id!r} does not exist"
SAME_VERSION = "cannot swap model {model_id!r} to version {version!r}: it is already the source"
NOT_ACTIVE = (
    "cannot swap model {model_id!r} from version {version!r}: the active version is {active!r}"
)
NO_ACTIVE_VERSION = "model {model_id!r} has no active version to swap from"
ALREADY_SERVING = "model {model_id!r} already serves version {active!r}: swap it instead"
ALREADY_ACTIVE = "version {version!r} of model {model_id!r} is already active"
IN_PROGRESS = (
    "a {operation} of model {model_id!r} is already running "
    "({from_version} -> {to_version}, {state}); try again when it finishes"
)
NOT_SERVED_BEFORE = (
    "cannot roll model {model_id!r} back to version {version!r}: it has never served this model"
)
UNHEALTHY = "version {version!r} of model {model_id!r} failed its health check: {reason}"
INCOMPATIBLE = (
    "version {version!r} of model {model_id!r} would break the clients of version "
    "{active!r}: {problems}. Fix the version, or force the swap with a reason"
)
UNDESCRIBED = (
    "cannot tell which tensors version {version!r} takes and gives: the live replicas "
    "describe it differently, or one runs an older Hotswap that does not report them "
    "(upgrade the replicas first)"
)


class SwapError(Exception):
    """Base of every engine refusal and failure."""

    code = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownModel(SwapError):
    code = "not_found"


class UnknownVersion(SwapError):
    code = "not_found"


class InvalidSwap(SwapError):
    """Same version, wrong source, or a rollback target this model never served."""

    code = "invalid"


class SwapConflict(SwapError):
    """Another swap or rollback of this model is running; refused at once, not queued."""

    code = "conflict"


class UnhealthyVersion(SwapError):
    code = "unhealthy"

    def __init__(self, message: str, health: HealthCheckResult) -> None:
        super().__init__(message)
        self.health = health


class IncompatibleVersion(SwapError):
    """The target would refuse requests the active version takes, or answer differently."""

    code = "invalid"

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


class LoadError(SwapError):
    """A version could not be loaded (missing or corrupt artifact, bad factory, ...)."""

    code = "unhealthy"


class FleetUnavailable(SwapError):
    """The coordination store (Redis) could not be reached; nothing was changed."""

    code = "unavailable"


class NotServing(SwapError):
    """The serving path has nothing to answer with: no route, or the version is not loaded."""

    code = "not_loaded"
