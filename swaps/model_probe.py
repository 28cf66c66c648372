"""What registration learns from the model itself, for the fields nobody gave it.

A scikit-learn or ONNX file knows its inputs; run once, it shows its outputs, their
shape and their datatype; loading it shows the memory it keeps. So a version may be
registered with only its runtime and artifact: the fields left out are taken from a
trial of the model, recorded like declared ones (every replica serves the same names
and checks the same sample), and listed on the record (`taken_from_model`) so the
registrant sees what was taken.

The trial runs where the fleet's replicas run theirs: in a child of a trial server
(`engine.sandbox`) with no secret in its environment, a time limit and a memory limit.
Loading an artifact runs its code, and this is the control plane's process: the
console's secrets and database must stay out of its reach, and a model that crashes
its load must fail its registration, not the console.
"""

from __future__ import annotations

import atexit
import math
import threading

from swaps.engine import sandbox
from swaps.engine.errors import LoadError
from swaps.engine.spec import RUNTIMES, TensorSpec, VersionSpec

# What registration may take from the model, in the order it reports them.
TAKEABLE = (
    "inputs",
    "outputs",
    "sample_input",
    "expected_output_shape",
    "expected_output_dtype",
    "memory_limit_bytes",
)
# The trial of a model registered without a memory limit may take this much.
PROBE_MEMORY_LIMIT_BYTES = 2 * 2**30
# A limit taken from the model leaves room for what a load keeps beyond the trial's
# measurement (a framework's arenas grow with traffic): twice what it kept, and never
# less than this.
MIN_MEMORY_LIMIT_BYTES = 64 * 2**20
PROBE_TIMEOUT_SECONDS = 60.0

NOT_PROBED = "the model could not be tried to take {fields} from it: {reason}"

_sandbox: sandbox.Sandbox | None = None
_lock = threading.Lock()


def missing_fields(fields: dict) -> list[str]:
    """The fields a registration left out that the model can tell."""
    return [name for name in TAKEABLE if fields.get(name) in (None, [], ())]


def take_from_model(fields: dict, *, digest: str = "") -> tuple[dict, list[str]]:
    """`fields` with what was missing taken from a trial of the model, and which those are.

    `digest`: the artifact's, as registration took it; the trial loads only those bytes.

    Raises `LoadError` (message `NOT_PROBED`) if the trial fails: the version is not
    registered.
    """
    missing = missing_fields(fields)
    if not missing:
        return fields, []
    spec = VersionSpec(
        model_id=fields["model"],
        version=fields["version"],
        runtime=fields["runtime"],
        artifact=fields["artifact"],
        sample_input=fields.get("sample_input") or [],
        # Placeholders: a describing trial runs no health check against them.
        expected_output_shape=tuple(fields.get("expected_output_shape") or ()),
        expected_output_dtype=fields.get("expected_output_dtype") or "",
        memory_limit_bytes=fields.get("memory_limit_bytes") or PROBE_MEMORY_LIMIT_BYTES,
        inputs=tuple(TensorSpec.from_dict(t) for t in fields.get("inputs") or ()),
        outputs=tuple(TensorSpec.from_dict(t) for t in fields.get("outputs") or ()),
        artifact_digest=digest,
    )
    try:
        trial = _trial_server().trial(spec, describe=True)
    except LoadError as exc:
        reason = getattr(exc, "reason", None) or exc.message
        raise LoadError(NOT_PROBED.format(fields=", ".join(missing), reason=reason)) from None
    described = dict(trial.description or {})
    described["memory_limit_bytes"] = memory_limit_for(trial.memory_bytes)
    return {**fields, **{name: described[name] for name in missing}}, missing


def memory_limit_for(kept_bytes: int) -> int:
    """The memory limit recorded for a version whose trial kept `kept_bytes`: whole MiB."""
    wanted = max(MIN_MEMORY_LIMIT_BYTES, 2 * kept_bytes)
    return math.ceil(wanted / 2**20) * 2**20


def _trial_server() -> sandbox.Sandbox:
    """One trial server per control-plane process, started on the first registration
    that needs it (importing the console starts nothing) and stopped at exit."""
    global _sandbox
    with _lock:
        if _sandbox is None:
            _sandbox = sandbox.Sandbox(timeout=PROBE_TIMEOUT_SECONDS)
            atexit.register(_sandbox.close)
            # Every runtime's framework imported up front, so that no version is charged
            # for one: a factory that trains a scikit-learn model kept 130.8 MB, over its
            # 95 MB limit, in a server that had not imported scikit-learn yet.
            _sandbox.start(RUNTIMES)
        return _sandbox
