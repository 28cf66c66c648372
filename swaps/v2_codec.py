"""V2 inference requests in, responses out: JSON tensors and the binary data extension.

A request body is JSON, or (Triton's binary tensor data extension, what its Python
client sends by default) a JSON header of `Inference-Header-Content-Length` bytes
followed by the raw bytes of every input whose `parameters.binary_data_size` says so,
in input order. Outputs go back as JSON `data`, or as raw bytes after the JSON header
when the request asks (`binary_data_output`, or an output's `binary_data`).

Anything wrong with a request is a `BadRequest` whose message says what and where; the
model never sees it. https://github.com/kserve/open-inference-protocol
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .engine.spec import TensorSpec
from .engine.tensors import V2_TO_NUMPY, numpy_dtype, shape_matches, v2_datatype

# JSON data of each datatype may hold these numpy kinds: no silent float -> int cuts.
ALLOWED_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}
MAX_DIMENSIONS = 16


class BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: as the request's binary_data_output says


@dataclass
class InferenceRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]  # input name -> the V2 datatype the client declared
    outputs: list[RequestedOutput] | None = None  # None: every output
    binary_output: bool = False


def decode_request(body: bytes, *, header_length: str | None = None) -> InferenceRequest:
    """Parse an inference request body; raise BadRequest for anything malformed."""
    json_part, binary = _split(body, header_length)
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object with an 'inputs' list")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    parameters = _parameters(document, "the request")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for position, raw in enumerate(raw_inputs):
        name, datatype, array, offset = _decode_input(raw, position, binary, offset)
        if name in inputs:
            raise BadRequest(f"input {name!r} appears twice")
        inputs[name], datatypes[name] = array, datatype
    if offset != len(binary):
        raise BadRequest(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims"
        )
    return InferenceRequest(
        id=request_id,
        inputs=inputs,
        datatypes=datatypes,
        outputs=_requested_outputs(document.get("outputs")),
        binary_output=_flag(parameters, "binary_data_output", "the request"),
    )


def check_inputs(
    request: InferenceRequest, declared: tuple[TensorSpec, ...]
) -> dict[str, np.ndarray]:
    """The request's inputs, checked against the version's declared inputs.

    A version with one input takes it under any name (as the runtimes do); with
    several, every one must be there by name and nothing else.
    """
    if not declared:
        return request.inputs
    if len(declared) == 1 and len(request.inputs) == 1:
        pairs = [(declared[0], next(iter(request.inputs)))]
    else:
        names = {t.name for t in declared}
        missing = [t.name for t in declared if t.name not in request.inputs]
        if missing:
            raise BadRequest(f"missing input {', '.join(map(repr, missing))}")
        unknown = [n for n in request.inputs if n not in names]
        if unknown:
            raise BadRequest(
                f"unknown input {', '.join(map(repr, unknown))}; "
                f"the model takes {', '.join(map(repr, sorted(names)))}"
            )
        pairs = [(t, t.name) for t in declared]
    for spec, name in pairs:
        datatype = request.datatypes[name]
        if datatype != spec.datatype.upper():
            raise BadRequest(
                f"input {name!r} has datatype {datatype}; the model takes {spec.datatype}"
            )
        shape = tuple(request.inputs[name].shape)
        if not shape_matches(shape, spec.shape):
            raise BadRequest(
                f"input {name!r} has shape {list(shape)}; the model takes {_shape(spec.shape)}"
            )
    return request.inputs


def encode_response(
    *,
    model_id: str,
    version: str,
    request: InferenceRequest,
    outputs: Mapping[str, np.ndarray],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it."""
    tensors, blobs = [], []
    for name, binary in answered_outputs(request, outputs):
        array = np.asarray(outputs[name])
        datatype = v2_datatype(array.dtype)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = to_bytes(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _to_json_data(array, datatype)
        tensors.append(tensor)
    document: dict[str, Any] = {"model_name": model_id, "model_version": version}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = tensors
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def answered_outputs(
    request: InferenceRequest, outputs: Mapping[str, np.ndarray]
) -> list[tuple[str, bool]]:
    """The outputs the request asks for (all by default), each with whether it goes back
    as binary data; BadRequest naming any the model does not answer."""
    wanted = request.outputs
    if wanted is None:
        return [(name, request.binary_output) for name in outputs]
    unknown = [o.name for o in wanted if o.name not in outputs]
    if unknown:
        raise BadRequest(
            f"unknown output {', '.join(map(repr, unknown))}; "
            f"the model answers {', '.join(map(repr, outputs))}"
        )
    return [(o.name, request.binary_output if o.binary is None else o.binary) for o in wanted]


# -- decoding ------------------------------------------------------------------------------


def is_byte_count(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes "²" and "٣", which int() refuses."""
    return text.isascii() and text.isdigit()


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not is_byte_count(header_length) or int(header_length) > len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length {header_length!r} must be a byte count "
            f"no larger than the body ({len(body)} bytes)"
        )
    cut = int(header_length)
    return body[:cut], body[cut:]


def _parameters(document: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = document.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"'parameters' of {where} must be an object")
    return parameters


def _flag(parameters: dict[str, Any], name: str, where: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {name!r} of {where} must be true or false")
    return value


def _decode_input(
    raw: Any, position: int, binary: bytes, offset: int
) -> tuple[str, str, np.ndarray, int]:
    if not isinstance(raw, dict):
        raise BadRequest(f"input {position} must be an object with name, shape, datatype, data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"input {position} needs a 'name'")
    datatype = checked_datatype(raw.get("datatype"), name)
    shape = checked_shape(raw.get("shape"), name)
    parameters = _parameters(raw, f"input {name!r}")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in raw:
            raise BadRequest(f"input {name!r} has both 'data' and binary_data_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadRequest(f"binary_data_size of input {name!r} must be a byte count")
        if offset + size > len(binary):
            raise BadRequest(
                f"input {name!r} claims {size} bytes of binary data; "
                f"only {len(binary) - offset} remain in the body"
            )
        flat = from_bytes(binary[offset : offset + size], datatype, name)
        offset += size
    elif "data" in raw:
        flat = _from_json(raw["data"], datatype, name)
    else:
        raise BadRequest(f"input {name!r} has no 'data' (nor binary_data_size)")
    return name, datatype, shaped(flat, shape, name), offset


def checked_datatype(datatype: Any, name: str) -> str:
    """The V2 datatype named, upper case; BadRequest for anything else."""
    if not isinstance(datatype, str) or datatype.upper() not in V2_TO_NUMPY:
        raise BadRequest(
            f"input {name!r} has datatype {datatype!r}; expected one of {', '.join(V2_TO_NUMPY)}"
        )
    return datatype.upper()


def checked_shape(shape: Any, name: str) -> tuple[int, ...]:
    """A tensor's shape as a tuple of sizes, holding at least one value."""
    checked = _decode_shape(shape, name)
    _holds_values(checked, name)
    return checked


def shaped(flat: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """`flat`'s values in `shape`, once they are known to fill it and be finite."""
    count = _holds_values(shape, name)
    if flat.size != count:
        raise BadRequest(
            f"input {name!r} has shape {list(shape)}, which holds {count} values, "
            f"but its data has {flat.size}"
        )
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        raise BadRequest(f"input {name!r} contains NaN or infinity")
    return flat.reshape(shape)


def _holds_values(shape: tuple[int, ...], name: str) -> int:
    count = math.prod(shape)
    if count == 0:
        raise BadRequest(f"input {name!r} has shape {list(shape)}, which holds no values")
    return count


def _decode_shape(shape: Any, name: str) -> tuple[int, ...]:
    if (
        not isinstance(shape, list | tuple)
        or len(shape) > MAX_DIMENSIONS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise BadRequest(f"input {name!r} needs a 'shape': a list of sizes, each 0 or more")
    return tuple(shape)


def _from_json(data: Any, datatype: str, name: str) -> np.ndarray:
    if not isinstance(data, list):
        raise BadRequest(f"'data' of input {name!r} must be a list")
    if datatype == "BYTES":
        return np.array([_as_bytes(v, name) for v in _flatten(data)], dtype=np.object_)
    target = numpy_dtype(datatype)
    try:
        values = np.array(data)
    except ValueError:
        raise BadRequest(
            f"'data' of input {name!r} is ragged: nested lists of unequal length"
        ) from None
    allowed = ALLOWED_KINDS[target.kind]
    if values.size and values.dtype.kind not in allowed:
        raise BadRequest(f"'data' of input {name!r} holds values that are not {datatype}")
    if target.kind in "iu" and values.size:
        limits = np.iinfo(target)
        if values.min() < limits.min or values.max() > limits.max:
            raise BadRequest(f"'data' of input {name!r} holds values out of range for {datatype}")
    with np.errstate(over="ignore"):  # overflow to infinity is refused right after
        return values.astype(target, copy=False).ravel()


def from_bytes(blob: bytes, datatype: str, name: str) -> np.ndarray:
    if datatype == "BYTES":
        return _unpack_bytes(blob, name)
    dtype = numpy_dtype(datatype).newbyteorder("<")
    if len(blob) % dtype.itemsize:
        raise BadRequest(
            f"binary data of input {name!r} is {len(blob)} bytes, "
            f"not a whole number of {datatype} values"
        )
    array = np.frombuffer(blob, dtype=dtype)
    if datatype == "BOOL" and array.size and array.view(np.uint8).max() > 1:
        raise BadRequest(f"binary data of input {name!r} holds bytes that are not BOOL")
    return array


def _unpack_bytes(blob: bytes, name: str) -> np.ndarray:
    """Triton's BYTES layout: each element a 4-byte little-endian length, then the bytes."""
    items, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise BadRequest(f"binary BYTES data of input {name!r} is cut off")
        (length,) = struct.unpack_from("<I", blob, at)
        at += 4
        if at + length > len(blob):
            raise BadRequest(f"binary BYTES data of input {name!r} is cut off")
        items.append(blob[at : at + length])
        at += length
    return np.array(items, dtype=np.object_)


def _flatten(data: list) -> list:
    flat: list = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _as_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    raise BadRequest(f"'data' of BYTES input {name!r} must hold strings")


def _requested_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRequest("'outputs' must be a list of {name, parameters} objects")
    wanted = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"output {position} needs a 'name'")
        parameters = _parameters(item, f"output {item['name']!r}")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise BadRequest(f"binary_data of output {item['name']!r} must be true or false")
        wanted.append(RequestedOutput(item["name"], binary))
    return wanted


# -- encoding ------------------------------------------------------------------------------


def to_bytes(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in array.ravel():
            raw = item if isinstance(item, bytes) else str(item).encode()
            parts += [struct.pack("<I", len(raw)), raw]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _to_json_data(array: np.ndarray, datatype: str) -> Any:
    if datatype == "BYTES":
        return [
            item.decode(errors="replace") if isinstance(item, bytes) else str(item)
            for item in array.ravel()
        ]
    return np.ascontiguousarray(array).ravel()


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("any" if d == -1 else str(d) for d in shape) + "]"
