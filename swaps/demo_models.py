"""Demo model versions, trained on scikit-learn's bundled iris data (no download).

- `iris` 1: LogisticRegression, a joblib file served by the sklearn runtime.
- `iris` 2: RandomForestClassifier converted with skl2onnx, served by ONNX Runtime.
- `iris` 3: deliberately broken: it answers class probabilities, shape (n, 3) FP32,
  where the version declares labels, shape (-1,) INT64, so its health check fails.

Run `python -m swaps.demo_models DIR` to build the iris artifacts into DIR and print
their specs as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from .engine.spec import TensorSpec, VersionSpec

IRIS_MODEL_ID = "iris"
IRIS_SAMPLE = [[5.1, 3.5, 1.4, 0.2]]  # the first iris row, a setosa
IRIS_INPUT = TensorSpec("input-0", "FP32", (-1, 4))
IRIS_LABELS_SHAPE = (-1,)
IRIS_LABELS_DTYPE = "INT64"
# Every version answers with this one output, whatever its runtime would call it
# ("predict", skl2onnx's "label"...): a client reads the same name across a swap.
IRIS_OUTPUT = TensorSpec("label", IRIS_LABELS_DTYPE, IRIS_LABELS_SHAPE)
# Generous for a model of a few kilobytes, yet a limit a runaway load would hit.
MEMORY_LIMIT_BYTES = 200 * 2**20
# Spelled out: under `python -m` this module's __name__ is "__main__".
BROKEN_IRIS_FACTORY = "swaps.demo_models:broken_iris"


def build_demo_models(directory: Path) -> list[VersionSpec]:
    """Train the iris versions, write their artifacts into `directory`, return their specs.

    Training is deterministic and each artifact is replaced atomically, so building into
    the same folder again is safe even while a replica reads it.
    """
    # Imported here, not above: replicas import this module for iris 3's factory, and
    # skl2onnx would be imported inside that version's memory measurement.
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier

    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    features, labels = _iris()

    logistic = LogisticRegression(max_iter=1000).fit(features, labels)
    v1_path = directory / "iris-1.joblib"
    _write_atomically(v1_path, lambda tmp: joblib.dump(logistic, tmp))

    forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(features, labels)
    # Without zipmap the probabilities are a plain FP32 tensor, not a sequence of maps.
    # skl2onnx would rename "input-0" to "input_0" anyway; a lone input takes any name.
    onnx_model = convert_sklearn(
        forest,
        initial_types=[("input_0", FloatTensorType([None, 4]))],
        options={id(forest): {"zipmap": False}},
    )
    v2_path = directory / "iris-2.onnx"
    _write_atomically(v2_path, lambda tmp: tmp.write_bytes(onnx_model.SerializeToString()))

    return [
        _iris_spec(version="1", runtime="sklearn", artifact=str(v1_path)),
        _iris_spec(version="2", runtime="onnx", artifact=str(v2_path)),
        _iris_spec(version="3", runtime="python", artifact=BROKEN_IRIS_FACTORY),
    ]


def broken_iris() -> Callable[[np.ndarray], np.ndarray]:
    """Factory of iris version 3: probabilities where labels are declared."""
    features, labels = _iris()
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    return model.predict_proba


def _iris_spec(*, version: str, runtime: str, artifact: str) -> VersionSpec:
    return VersionSpec(
        model_id=IRIS_MODEL_ID,
        version=version,
        runtime=runtime,
        artifact=artifact,
        sample_input=IRIS_SAMPLE,
        expected_output_shape=IRIS_LABELS_SHAPE,
        expected_output_dtype=IRIS_LABELS_DTYPE,
        memory_limit_bytes=MEMORY_LIMIT_BYTES,
        # Declared for every version, so registration takes nothing from a trial of them;
        # the ONNX file's own input name, which clients need not use (a lone input
        # takes any name): every version takes the same request as version 1.
        inputs=(replace(IRIS_INPUT, name="input_0") if runtime == "onnx" else IRIS_INPUT,),
        outputs=(IRIS_OUTPUT,),
    )


def _iris() -> tuple[np.ndarray, np.ndarray]:
    iris = load_iris()
    return iris.data.astype(np.float32), iris.target.astype(np.int64)


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(descriptor)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m swaps.demo_models DIR", file=sys.stderr)
        return 2
    specs = build_demo_models(Path(argv[0]))
    print(json.dumps([spec.as_dict() for spec in specs], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
