"""V2 Open Inference Protocol datatypes and their numpy equivalents.

One table, used by the runtimes (to describe their inputs and outputs), the health check
(to compare an output with what a version declares) and the gateway (to decode and
encode request and response tensors).
"""

from __future__ import annotations

import numpy as np

# https://github.com/kserve/open-inference-protocol — "Tensor Data Types"
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
NUMPY_TO_V2: dict[np.dtype, str] = {dtype: name for name, dtype in V2_TO_NUMPY.items()}


def v2_datatype(dtype: np.dtype | type | str) -> str:
    """The V2 name of a numpy dtype (strings and unicode arrays travel as BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "USO":
        return "BYTES"
    try:
        return NUMPY_TO_V2[dtype]
    except KeyError:
        raise ValueError(f"numpy dtype {dtype} has no V2 datatype") from None


def numpy_dtype(datatype: str) -> np.dtype:
    try:
        return V2_TO_NUMPY[datatype.upper()]
    except KeyError:
        raise ValueError(
            f"unknown datatype {datatype!r}; expected one of {', '.join(V2_TO_NUMPY)}"
        ) from None


def shape_matches(actual: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    """Whether an actual shape fits a declared one, where -1 stands for any size."""
    return len(actual) == len(declared) and all(
        d == -1 or a == d for a, d in zip(actual, declared, strict=True)
    )
