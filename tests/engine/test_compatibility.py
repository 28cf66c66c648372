"""A swap never breaks a client: the target must take what the active version took."""

from __future__ import annotations

from dataclasses import replace

import pytest

from swaps.engine import errors
from swaps.engine.compatibility import Signature, differences
from swaps.engine.errors import IncompatibleVersion
from swaps.engine.results import SwapState
from swaps.engine.spec import TensorSpec

from .conftest import MODEL, infer, python_spec

FEATURES = TensorSpec("input-0", "FP32", (-1, 4))
LABEL = TensorSpec("label", "INT64", (-1,))


def signature(inputs=(FEATURES,), outputs=(LABEL,)) -> Signature:
    return Signature(tuple(inputs), tuple(outputs))


def test_the_same_tensors_are_compatible():
    assert differences(signature(), signature()) == []


def test_a_lone_input_may_change_its_name():
    renamed = signature(inputs=[replace(FEATURES, name="input_0")])

    assert differences(signature(), renamed) == []


def test_a_lone_input_of_another_datatype_is_named():
    wider = signature(inputs=[replace(FEATURES, datatype="FP64")])

    assert differences(signature(), wider) == [
        "input 'input-0' takes FP64, where clients send FP32"
    ]


def test_a_fixed_size_where_clients_send_any_is_named():
    any_width = signature(inputs=[replace(FEATURES, shape=(-1, -1))])

    assert differences(any_width, signature()) == [
        "input 'input-0' takes shape [any, 4], where clients send [any, any]"
    ]
    assert differences(signature(), any_width) == []  # any size takes the old 4


def test_a_renamed_output_is_named_with_what_the_target_gives():
    predict = signature(outputs=[replace(LABEL, name="predict")])

    assert differences(predict, signature()) == [
        "output 'predict', which clients read, is not one it gives (it gives 'label')"
    ]


def test_an_output_of_another_datatype_is_named():
    floats = signature(outputs=[replace(LABEL, datatype="FP32")])

    assert differences(signature(), floats) == ["output 'label' is FP32, where clients read INT64"]


def test_an_extra_output_breaks_nobody():
    more = signature(outputs=[LABEL, TensorSpec("probabilities", "FP32", (-1, 3))])

    assert differences(signature(), more) == []


def test_with_several_inputs_each_missing_or_new_one_is_named():
    a, b, c = (TensorSpec(name, "FP32", (-1, 1)) for name in "abc")

    found = differences(signature(inputs=[a, b]), signature(inputs=[a, c]))

    assert found == [
        "input 'b', which clients send, is not one it takes",
        "it requires input 'c', which clients do not send",
    ]


def test_every_difference_is_named():
    target = signature(
        inputs=[replace(FEATURES, datatype="FP64", shape=(-1, 3))],
        outputs=[replace(LABEL, name="predict")],
    )

    assert len(differences(signature(), target)) == 3


# Through the engine (the in-process stack, the real python runtime)


@pytest.fixture
def fp32(stack):
    """Version "fp32": takes FP32 where versions 1 to 3 take FP64 (their sample's)."""
    spec = python_spec("fp32")
    stack.versions.register(replace(spec, inputs=(TensorSpec("input-0", "FP32", (-1, 2)),)))
    return "fp32"


async def test_a_swap_to_an_incompatible_target_is_refused_and_routing_stays(
    stack, serving_version, fp32, transitions
):
    with pytest.raises(IncompatibleVersion) as refused:
        await stack.swapper.swap_version(MODEL, "1", fp32)

    assert refused.value.problems == ["input 'input-0' takes FP32, where clients send FP64"]
    assert "would break the clients of version '1'" in refused.value.message
    assert infer(stack).version == "1"
    assert not await stack.versions.is_loaded(MODEL, fp32)  # loaded for the check only
    assert transitions.seen[-1].state is SwapState.FAILED


async def test_a_forced_swap_goes_ahead_and_its_flip_says_what_breaks(
    stack, serving_version, fp32, transitions
):
    result = await stack.swapper.swap_version(MODEL, "1", fp32, force=True)

    assert result.success
    draining = await transitions.wait_for(SwapState.DRAINING)
    assert "forced: it breaks clients: input 'input-0' takes FP32" in draining.message


async def test_a_compatible_swap_names_nothing(stack, serving_version, transitions):
    await stack.swapper.swap_version(MODEL, "1", "2")

    draining = await transitions.wait_for(SwapState.DRAINING)
    assert "forced" not in draining.message


async def test_a_swap_whose_tensors_nobody_can_tell_is_refused_saying_so(
    stack, serving_version, monkeypatch
):
    async def undescribed(model_id, version):  # as from a replica of an older Hotswap
        return None

    monkeypatch.setattr(stack.versions, "signature", undescribed)

    with pytest.raises(IncompatibleVersion) as refused:
        await stack.swapper.swap_version(MODEL, "1", "2")

    assert refused.value.problems == [errors.UNDESCRIBED.format(version="2")]
    assert infer(stack).version == "1"
