"""Whether a version can take over a model's clients: the tensors it takes and gives.

A swap must not break a client that worked a moment before. The clients of the active
version send its inputs (by name, datatype and shape) and read its outputs (by name
and datatype); the target must take every request the gateway let through to the
active version (swaps/v2_codec.py `check_inputs` decides what it lets through), and
answer with the same outputs. `differences` names each way it would not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .spec import TensorSpec


@dataclass(frozen=True)
class Signature:
    """The tensors a loaded version takes and gives, as its runtime describes them."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.as_dict() for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            inputs=tuple(TensorSpec.from_dict(t) for t in data.get("inputs", ())),
            outputs=tuple(TensorSpec.from_dict(t) for t in data.get("outputs", ())),
        )


def differences(active: Signature, target: Signature) -> list[str]:
    """Each way a client of `active` would fail against `target`; empty if none."""
    return [*_input_differences(active.inputs, target.inputs), *_output_differences(active, target)]


def _input_differences(active: tuple[TensorSpec, ...], target: tuple[TensorSpec, ...]) -> list[str]:
    if not active or not target:
        return []  # a version that declares no inputs takes whatever it is sent
    if len(active) == 1 and len(target) == 1:
        # A lone input is taken under any name: only what it holds must fit.
        return _tensor_differences(active[0], target[0], role="input")
    found: list[str] = []
    by_name = {t.name: t for t in target}
    for tensor in active:
        match = by_name.get(tensor.name)
        if match is None:
            found.append(f"input {tensor.name!r}, which clients send, is not one it takes")
        else:
            found.extend(_tensor_differences(tensor, match, role="input"))
    sent = {t.name for t in active}
    found.extend(
        f"it requires input {t.name!r}, which clients do not send"
        for t in target
        if t.name not in sent
    )
    return found


def _output_differences(active: Signature, target: Signature) -> list[str]:
    found: list[str] = []
    by_name = {t.name: t for t in target.outputs}
    for tensor in active.outputs:
        match = by_name.get(tensor.name)
        if match is None:
            offered = ", ".join(repr(t.name) for t in target.outputs) or "none"
            found.append(
                f"output {tensor.name!r}, which clients read, is not one it gives "
                f"(it gives {offered})"
            )
        elif match.datatype.upper() != tensor.datatype.upper():
            found.append(
                f"output {tensor.name!r} is {match.datatype}, where clients read {tensor.datatype}"
            )
    return found


def _tensor_differences(active: TensorSpec, target: TensorSpec, *, role: str) -> list[str]:
    name = active.name if active.name == target.name else f"{active.name}/{target.name}"
    found = []
    if active.datatype.upper() != target.datatype.upper():
        found.append(
            f"{role} {name!r} takes {target.datatype}, where clients send {active.datatype}"
        )
    if not _takes_every_shape(active.shape, target.shape):
        found.append(
            f"{role} {name!r} takes shape {_shape(target.shape)}, "
            f"where clients send {_shape(active.shape)}"
        )
    return found


def _takes_every_shape(active: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether every shape `active` lets through fits `target` (-1: any size)."""
    return len(active) == len(target) and all(
        t == -1 or a == t for a, t in zip(active, target, strict=True)
    )


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("any" if d == -1 else str(d) for d in shape) + "]"
