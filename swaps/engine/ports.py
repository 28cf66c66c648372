"""The engine's ports: what `ModelHotSwapper` needs from the world, and nothing more.

Each port has an in-process implementation (`versions.py`, `router.py`, `inflight.py`,
`board.py`: one process, unit tests) and a Redis-backed one in `fleet.py` (many
replicas on many hosts). Methods the engine awaits may wait on other processes in a
fleet. The serving path reads only process-local state (`serving.py`): the inference
hot path makes no round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from .compatibility import Signature
    from .results import HealthCheckResult, SwapStatus
    from .router import Split
    from .spec import TensorSpec, VersionSpec


@runtime_checkable
class LoadedModel(Protocol):
    """A version loaded into this process by a runtime (`runtimes.load`)."""

    spec: VersionSpec
    platform: str  # V2 metadata "platform": "sklearn", "onnxruntime_onnx", "python"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    memory_bytes: int  # measured while loading, not declared
    load_seconds: float

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; the first output is the primary one the health check reads."""
        ...


class VersionManager(Protocol):
    """Which versions exist, and getting them in and out of memory where they serve."""

    async def models(self) -> list[str]: ...

    async def versions(self, model_id: str) -> list[str]:
        """Registered versions of the model (empty for an unknown model)."""
        ...

    async def spec(self, model_id: str, version: str) -> VersionSpec | None: ...

    async def is_loaded(self, model_id: str, version: str) -> bool:
        """Loaded where it serves (in a fleet: on every live replica)."""
        ...

    async def load(self, model_id: str, version: str) -> None:
        """Load it where it serves and cancel any pending unload; raise `LoadError`."""
        ...

    async def check_health(self, model_id: str, version: str) -> HealthCheckResult:
        """Health where it serves (in a fleet: the worst replica's). Never raises."""
        ...

    async def signature(self, model_id: str, version: str) -> Signature | None:
        """The tensors the version takes and gives where it is loaded (in a fleet: as
        every live replica that loaded it describes it); None if none did, if they
        disagree, or if one that loaded it does not describe it (an older replica)."""
        ...

    async def keep_warm(self, model_id: str, version: str) -> bool:
        """Keep a warm version for a rollback, without loading or checking it again.

        Warm: loaded everywhere it serves, its health check passed there since it was
        loaded, and not about to be unloaded. Then any pending unload is cancelled and
        this returns True; else it changes nothing and returns False (load and check).
        """
        ...

    async def unload(self, model_id: str, version: str, *, after: float = 0.0) -> None:
        """Unload once `after` seconds have passed and no request is in flight on it.

        A later `load` of the same version, or routing to it again, cancels the unload:
        that is what keeps a rolled-back-from version warm.
        """
        ...


class Router(Protocol):
    """Which version serves a model's unpinned requests."""

    async def active(self, model_id: str) -> str | None: ...

    async def epoch(self, model_id: str) -> int:
        """Rises by one with each flip; 0 before the first."""
        ...

    async def history(self, model_id: str) -> list[str]:
        """Versions that have served the model, oldest first, the active one last."""
        ...

    async def split(self, model_id: str) -> Split | None:
        """The rollout's share of the route (router.Split), None when there is none."""
        ...

    async def flip(self, model_id: str, version: str, split: Split | None = None) -> int:
        """Route the model to `version` (with `split`, a rollout's share) atomically;
        return the new epoch.

        Returns once every serving path routes new unpinned requests to `version` (in a
        fleet: once every live replica has acknowledged the epoch).
        """
        ...


class InflightTracker(Protocol):
    """Requests in flight per model and version, and how many each version completed."""

    async def pending(self, model_id: str, version: str) -> int: ...

    async def completed(self, model_id: str, version: str) -> int: ...

    async def wait_drained(self, model_id: str, version: str, timeout: float) -> int:
        """Wait until nothing is in flight on the version, or `timeout` seconds pass.

        Returns the requests still in flight (0 when drained). Never cuts one off.
        """
        ...


class StatusBoard(Protocol):
    """Each model's live swap status, shared by everyone who asks (`get_swap_status`)."""

    async def begin(self, status: SwapStatus) -> SwapStatus | None:
        """Record `status` as the model's running operation, unless one already runs.

        Atomic. Returns None when recorded, else the running status that refused it.
        """
        ...

    async def put(self, status: SwapStatus) -> None:
        """Record a transition of the operation that `begin` accepted."""
        ...

    async def get(self, model_id: str) -> SwapStatus | None: ...
