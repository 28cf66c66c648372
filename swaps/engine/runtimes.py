"""Loading a model version into this process: scikit-learn, ONNX Runtime, or Python code.

`load(spec)` reads `spec.artifact` with the runtime `spec.runtime` names, measures the
memory the load kept, and hands back a `LoadedModel` whose `predict` takes named input
arrays and returns named output arrays, the primary one first. Every failure becomes a
`LoadError` that names the version, the artifact and the cause; a file that is not the
one registered (its digest differs: `artifacts.py`) fails before the runtime reads it.

Artifacts are code: a joblib file unpickles arbitrary objects and a python factory runs
arbitrary code. Replicas never call `load` on a version before a trial in a child
process loaded it safely (`sandbox.py`).

`predict` may be called from many threads at once: scikit-learn's predict and ONNX
Runtime's `InferenceSession.run` are thread-safe, and a python factory's model must be.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import joblib
import numpy as np

from . import artifacts
from .errors import LoadError
from .memory import RetainedMemory, measure_retained_memory
from .spec import RUNTIMES, TensorSpec, VersionSpec
from .tensors import numpy_dtype, v2_datatype

if TYPE_CHECKING:
    import onnxruntime

LOAD_FAILED = "cannot load version {version!r} of model {model_id!r} from {artifact!r}: {cause}"
UNKNOWN_RUNTIME = "unknown runtime {runtime!r}; expected one of {expected}"
NO_FILE = "the artifact file does not exist"
BAD_FACTORY_PATH = "a python artifact must look like 'package.module:factory'"

# A session's element types, as ONNX Runtime spells them ("tensor(float)").
ONNX_TO_V2 = {
    "float": "FP32",
    "double": "FP64",
    "float16": "FP16",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "bool": "BOOL",
    "string": "BYTES",
}
_ONNX_TENSOR = re.compile(r"tensor\((\w+)\)")

# What each runtime's versions share: imported once per process, before (outside) the
# first load's memory measurement. Imported inside it, scikit-learn's code was charged to
# the first sklearn version (115 MB of a 200 MB limit) and took 8 s under tracemalloc
# instead of 1.4 s. A process that never loads an ONNX version never imports ONNX Runtime.
FRAMEWORKS: dict[str, tuple[str, ...]] = {
    "sklearn": ("sklearn.base", "sklearn.utils"),
    "onnx": ("onnxruntime",),
    "python": (),
}

Batch = Mapping[str, np.ndarray]
Runner = Callable[[Batch], dict[str, np.ndarray]]


@dataclass(frozen=True, eq=False)
class RuntimeModel:
    """A loaded version: the `LoadedModel` port, whichever runtime produced it."""

    spec: VersionSpec
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    memory_bytes: int
    load_seconds: float
    runner: Runner = field(repr=False)

    def predict(self, inputs: Batch) -> dict[str, np.ndarray]:
        return self.runner(inputs)


class _Parts(NamedTuple):
    platform: str
    runner: Runner
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class _Cause(Exception):
    """Why a load failed, already in words fit for the LoadError message."""


NO_SAMPLE = (
    "it has no sample input, and its input {name!r} (shape {shape}) does not say how "
    "large a row is: give a sample input"
)


def load(spec: VersionSpec, *, measure: bool = True) -> RuntimeModel:
    """Load `spec`'s artifact with its runtime; raise `LoadError` on any failure.

    `measure=False` skips the memory measurement (and its process-wide lock): for a
    caller that measured the same load elsewhere (`sandbox.Sandbox.load`, in a trial).
    """
    loader = _LOADERS.get(spec.runtime)
    if loader is None:
        cause = UNKNOWN_RUNTIME.format(runtime=spec.runtime, expected=", ".join(RUNTIMES))
        raise LoadError(_failure(spec, cause))
    started = time.perf_counter()
    try:
        for module in FRAMEWORKS[spec.runtime]:
            importlib.import_module(module)
    except ImportError as exc:  # a broken install fails this version, not the replica
        cause = f"the {spec.runtime} runtime cannot be imported ({exc})"
        raise LoadError(_failure(spec, cause)) from exc
    try:
        if measure:
            with measure_retained_memory() as memory:
                parts = loader(spec)
        else:
            parts, memory = loader(spec), RetainedMemory()
    except _Cause as exc:
        raise LoadError(_failure(spec, str(exc))) from exc
    except LoadError:  # the artifact is not the one registered: its message says so
        raise
    # Whatever else the artifact's code throws (even SystemExit) fails this version only.
    except (Exception, SystemExit) as exc:
        raise LoadError(_failure(spec, describe_exception(exc))) from exc
    return RuntimeModel(
        spec=spec,
        platform=parts.platform,
        inputs=parts.inputs,
        outputs=parts.outputs,
        memory_bytes=memory.bytes,
        load_seconds=time.perf_counter() - started,
        runner=parts.runner,
    )


def sample_batch(spec: VersionSpec, tensor: TensorSpec) -> np.ndarray:
    """The version's sample input as an array of the input tensor's datatype.

    A version registered without one is described by a row of zeros of the tensor's
    shape (registration then records that row as its sample: `swaps.model_probe`).
    """
    dtype = numpy_dtype(tensor.datatype)
    if spec.sample_input:
        return np.asarray(spec.sample_input, dtype=dtype)
    row = tensor.shape[1:]
    if not tensor.shape or any(d <= 0 for d in row):
        raise _Cause(NO_SAMPLE.format(name=tensor.name, shape=list(tensor.shape)))
    return np.zeros((1, *row), dtype=dtype)


def _load_sklearn(spec: VersionSpec) -> _Parts:
    path = _artifact_file(spec)
    try:
        estimator = joblib.load(path)
    except Exception as exc:
        raise _Cause(f"not a joblib file it can read ({describe_exception(exc)})") from exc
    if not callable(getattr(estimator, "predict", None)):
        raise _Cause(f"the file holds a {type(estimator).__name__}, which has no predict method")
    inputs = spec.inputs or (
        TensorSpec("input-0", "FP32", (-1, int(getattr(estimator, "n_features_in_", -1)))),
    )
    input_name = inputs[0].name
    output_name = spec.outputs[0].name if spec.outputs else "predict"

    def run(batch: Batch) -> dict[str, np.ndarray]:
        return {output_name: np.asarray(estimator.predict(_single_input(batch, input_name)))}

    return _Parts("sklearn", run, inputs, spec.outputs or _describe_outputs(spec, run, inputs))


def _load_onnx(spec: VersionSpec) -> _Parts:
    import onnxruntime

    path = _artifact_file(spec)
    options = onnxruntime.SessionOptions()
    # Replicas scale out as processes; on a 2-core host, per-session thread pools only
    # fight each other (and the web server) for the same cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise _Cause(
            f"not an ONNX model ONNX Runtime can read ({describe_exception(exc)})"
        ) from exc
    inputs = tuple(_onnx_tensor(arg, "input") for arg in session.get_inputs())
    # A V2 response carries tensors only: outputs such as skl2onnx's ZipMap (a sequence
    # of maps) are left out rather than refusing a model whose tensors serve fine.
    found = tuple(
        _onnx_tensor(arg, "output") for arg in session.get_outputs() if _is_onnx_tensor(arg)
    )
    if not found:
        raise _Cause("the model has no tensor outputs to serve")
    # Declared outputs are served under their declared names (the same names whatever
    # the runtime, so clients read them across a swap between runtimes): each is the
    # model's output of that name, or else the one at its position.
    chosen = _declared_onnx_outputs(spec.outputs, found) if spec.outputs else found
    output_names = [t.name for t in chosen]
    outputs = spec.outputs or found
    dtypes = {t.name: numpy_dtype(t.datatype) for t in inputs}

    def run(batch: Batch) -> dict[str, np.ndarray]:
        if len(inputs) == 1:
            feed = {inputs[0].name: _single_input(batch, inputs[0].name)}
        else:
            missing = [name for name in dtypes if name not in batch]
            if missing:
                raise ValueError(f"missing input tensors: {', '.join(missing)}")
            feed = {name: batch[name] for name in dtypes}
        # ONNX Runtime refuses a float64 array for a float input: convert to the declared type.
        feed = {name: np.asarray(value, dtype=dtypes[name]) for name, value in feed.items()}
        served = [t.name for t in outputs]
        return dict(zip(served, session.run(output_names, feed), strict=True))

    return _Parts("onnxruntime_onnx", run, inputs, outputs)


def _load_python(spec: VersionSpec) -> _Parts:
    model = _call_factory(spec.artifact)
    sample = np.asarray(spec.sample_input)
    inputs = spec.inputs or (TensorSpec("input-0", v2_datatype(sample.dtype), _batched(sample)),)
    if callable(getattr(model, "predict", None)):

        def run(batch: Batch) -> dict[str, np.ndarray]:
            return {name: np.asarray(value) for name, value in model.predict(batch).items()}

    elif callable(model):
        input_name = inputs[0].name
        output_name = spec.outputs[0].name if spec.outputs else "output-0"

        def run(batch: Batch) -> dict[str, np.ndarray]:
            return {output_name: np.asarray(model(_single_input(batch, input_name)))}

    else:
        raise _Cause(
            f"the factory returned an object of type {type(model).__name__}, "
            "which has no predict method and is not callable"
        )
    return _Parts("python", run, inputs, spec.outputs or _describe_outputs(spec, run, inputs))


_LOADERS: dict[str, Callable[[VersionSpec], _Parts]] = {
    "sklearn": _load_sklearn,
    "onnx": _load_onnx,
    "python": _load_python,
}


def _call_factory(artifact: str) -> Any:
    module_name, _, attribute = artifact.partition(":")
    if not module_name or not attribute:
        raise _Cause(BAD_FACTORY_PATH)
    # SystemExit too: a module or factory calling sys.exit() must not end the replica.
    try:
        factory: Any = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        raise _Cause(f"cannot import module {module_name!r} ({describe_exception(exc)})") from exc
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise _Cause(f"module {module_name!r} has no attribute {attribute!r}")
    if not callable(factory):
        raise _Cause(f"{artifact!r} is not a callable factory (it is a {type(factory).__name__})")
    try:
        return factory()
    except (Exception, SystemExit) as exc:
        raise _Cause(f"the factory raised {describe_exception(exc)}") from exc


def _describe_outputs(
    spec: VersionSpec, run: Runner, inputs: tuple[TensorSpec, ...]
) -> tuple[TensorSpec, ...]:
    """Outputs as a real run on the sample input shows them (batch dimension -> -1)."""
    batch = sample_batch(spec, inputs[0])
    try:
        results = run({inputs[0].name: batch})
    except Exception as exc:
        raise _Cause(f"the sample inference failed ({describe_exception(exc)})") from exc
    if not results:
        raise _Cause("the sample inference returned no outputs")
    return tuple(
        TensorSpec(name, v2_datatype(array.dtype), _batched(array))
        for name, array in results.items()
    )


def _batched(array: np.ndarray) -> tuple[int, ...]:
    return (-1, *array.shape[1:]) if array.ndim else ()


def _single_input(batch: Batch, name: str) -> np.ndarray:
    # Clients name a lone input as they please; only a batch of several must match names.
    if name in batch:
        return batch[name]
    if len(batch) == 1:
        return next(iter(batch.values()))
    raise ValueError(f"expected one input tensor named {name!r}, got {', '.join(batch) or 'none'}")


def _declared_onnx_outputs(
    declared: tuple[TensorSpec, ...], found: tuple[TensorSpec, ...]
) -> tuple[TensorSpec, ...]:
    by_name = {t.name: t for t in found}
    chosen = []
    for position, tensor in enumerate(declared):
        match = by_name.get(tensor.name) or (found[position] if position < len(found) else None)
        if match is None:
            raise _Cause(
                f"output {tensor.name!r} is declared, but the model has only "
                f"{len(found)} tensor output(s): {', '.join(t.name for t in found)}"
            )
        chosen.append(match)
    return tuple(chosen)


def _is_onnx_tensor(arg: onnxruntime.NodeArg) -> bool:
    match = _ONNX_TENSOR.fullmatch(arg.type)
    return bool(match) and match.group(1) in ONNX_TO_V2


def _onnx_tensor(arg: onnxruntime.NodeArg, role: str) -> TensorSpec:
    if not _is_onnx_tensor(arg):
        raise _Cause(f"{role} {arg.name!r} has type {arg.type}, which has no V2 datatype")
    element = _ONNX_TENSOR.fullmatch(arg.type).group(1)  # type: ignore[union-attr]
    # Symbolic ("N") and unknown (None) dimensions accept any size.
    shape = tuple(dim if isinstance(dim, int) else -1 for dim in arg.shape)
    return TensorSpec(arg.name, ONNX_TO_V2[element], shape)


def _artifact_file(spec: VersionSpec) -> Path:
    """The file to load, checked against the digest it was registered with.

    Checked here, in the process that loads it and just before its runtime opens it:
    the trial's child checks before the artifact's code runs at all, and the replica
    again, for a file changed after its trial. A window remains between the check and
    the runtime's own open (someone who may write under the artifact roots could swap
    the bytes in between). Closing it would mean loading from the very bytes hashed,
    held in memory whole: a large model would cost twice its size while it loads.
    """
    path = Path(spec.artifact)
    if not path.is_file():
        raise _Cause(NO_FILE)
    artifacts.check_digest(spec, path)
    return path


def describe_exception(exc: BaseException) -> str:
    """An exception as one line for an operator: its type, and its message if any."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _failure(spec: VersionSpec, cause: str) -> str:
    return LOAD_FAILED.format(
        version=spec.version, model_id=spec.model_id, artifact=spec.artifact, cause=cause
    )
