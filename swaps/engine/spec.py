"""What a model version is: the record every port and runtime agrees on.

A `VersionSpec` is plain data (it travels through the database and through Redis as
JSON), and says how to load the version and how to tell whether it works.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

RUNTIMES = ("sklearn", "onnx", "python")


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output tensor, as the V2 model metadata describes it."""

    name: str
    datatype: str  # a V2 datatype: "FP32", "INT64", ...
    shape: tuple[int, ...]  # -1 stands for any size (the batch dimension, usually)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(name=data["name"], datatype=data["datatype"], shape=tuple(data["shape"]))


@dataclass(frozen=True)
class VersionSpec:
    model_id: str
    version: str
    runtime: str  # one of RUNTIMES
    # A file path for "sklearn" (joblib) and "onnx"; "package.module:factory" for "python".
    artifact: str
    # A batch the health check feeds to the model: a nested list (one row per item).
    sample_input: list[Any]
    # The shape and V2 datatype the primary output must have for sample_input.
    expected_output_shape: tuple[int, ...]
    expected_output_dtype: str
    memory_limit_bytes: int
    # Declared tensors; when empty the runtime describes its own.
    inputs: tuple[TensorSpec, ...] = field(default=())
    outputs: tuple[TensorSpec, ...] = field(default=())
    # Adaptive batching (engine/batching.py): requests merged into batches of up to this
    # many rows, each waiting at most max_batch_delay_ms for others. 0 or 1: off.
    max_batch_size: int = 0
    max_batch_delay_ms: float = 0.0
    # The artifact's "sha256:<hex>" (engine/artifacts.py) recorded at registration, which
    # the loading process checks the file against. Empty: not checked (a python factory,
    # which has no file; a version registered before digests whose file was gone then; a
    # spec published by an older control plane).
    artifact_digest: str = ""

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["expected_output_shape"] = list(self.expected_output_shape)
        data["inputs"] = [t.as_dict() for t in self.inputs]
        data["outputs"] = [t.as_dict() for t in self.outputs]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionSpec:
        return cls(
            model_id=data["model_id"],
            version=data["version"],
            runtime=data["runtime"],
            artifact=data["artifact"],
            sample_input=data["sample_input"],
            expected_output_shape=tuple(data["expected_output_shape"]),
            expected_output_dtype=data["expected_output_dtype"],
            memory_limit_bytes=int(data["memory_limit_bytes"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in data.get("inputs") or ()),
            outputs=tuple(TensorSpec.from_dict(t) for t in data.get("outputs") or ()),
            max_batch_size=int(data.get("max_batch_size") or 0),
            max_batch_delay_ms=float(data.get("max_batch_delay_ms") or 0.0),
            artifact_digest=str(data.get("artifact_digest") or ""),
        )
