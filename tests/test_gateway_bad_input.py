"""Malformed requests get the right 4xx with a message, never a 500, and change nothing.

After every test the replica still answers a good request (`still_serving`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import GATEWAY_MAX_BODY_BYTES

INFER = "/v2/models/iris/infer"
GOOD_INPUT = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}


@pytest.fixture(scope="module")
def url(gateway_replica) -> str:
    return gateway_replica.url


@pytest.fixture(autouse=True)
def still_serving(url):
    yield
    answer = httpx.post(f"{url}{INFER}", json={"inputs": [GOOD_INPUT]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "1"


@pytest.fixture(scope="module")
def http(url) -> Iterator[httpx.Client]:
    """One keep-alive client for the module: hundreds of bodies, not hundreds of connects."""
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def send(http: httpx.Client, body: bytes, *, headers=None, path: str = INFER) -> httpx.Response:
    return http.post(path, content=body, headers=headers or {})


def with_input(**changes) -> bytes:
    return orjson.dumps({"inputs": [{**GOOD_INPUT, **changes}]})


def refused(response: httpx.Response, status: int, words: str) -> bool:
    message = response.json()["error"]
    assert response.status_code == status, (response.status_code, message)
    assert words in message, message
    return True


def test_bad_json_is_400(http):
    assert refused(send(http, b'{"inputs": [}'), 400, "not valid JSON")


def test_a_body_that_is_not_an_object_is_400(http):
    assert refused(send(http, b"[1, 2, 3]"), 400, "must be a JSON object")


def test_an_empty_body_is_400(http):
    assert refused(send(http, b""), 400, "not valid JSON")


def test_missing_inputs_is_400(http):
    assert refused(send(http, b'{"inputs": []}'), 400, "'inputs' must be a non-empty list")


def test_an_input_without_data_is_400(http):
    body = orjson.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32"}]})

    assert refused(send(http, body), 400, "has no 'data'")


def test_a_wrong_datatype_is_400(http):
    assert refused(
        send(http, with_input(datatype="INT64", data=[5, 3, 1, 0])), 400, "the model takes FP32"
    )


def test_an_unknown_datatype_is_400(http):
    assert refused(send(http, with_input(datatype="FLOAT")), 400, "expected one of")


def test_strings_in_numeric_data_are_400(http):
    assert refused(send(http, with_input(data=["a", "b", "c", "d"])), 400, "not FP32")


def test_a_shape_that_does_not_match_the_data_length_is_400(http):
    assert refused(send(http, with_input(shape=[2, 4])), 400, "holds 8 values, but its data has 4")


def test_a_shape_the_model_does_not_take_is_400(http):
    body = with_input(shape=[1, 3], data=[1.0, 2.0, 3.0])

    assert refused(send(http, body), 400, "the model takes [any, 4]")


def test_a_negative_dimension_is_400(http):
    assert refused(send(http, with_input(shape=[-1, 4])), 400, "each 0 or more")


def test_an_empty_tensor_is_400(http):
    assert refused(send(http, with_input(shape=[0, 4], data=[])), 400, "holds no values")


def test_ragged_data_is_400(http):
    assert refused(send(http, with_input(data=[[1.0, 2.0], [3.0]])), 400, "ragged")


def test_a_nan_literal_is_400(http):
    body = json.dumps({"inputs": [{**GOOD_INPUT, "data": [float("nan"), 1, 2, 3]}]}).encode()
    assert b"NaN" in body

    assert refused(send(http, body), 400, "not valid JSON")


def test_nan_in_binary_data_is_400(http):
    header = orjson.dumps(
        {
            "inputs": [
                {
                    **{k: v for k, v in GOOD_INPUT.items() if k != "data"},
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    )
    blob = struct.pack("<4f", float("nan"), 1.0, 2.0, 3.0)
    headers = {"Inference-Header-Content-Length": str(len(header))}

    assert refused(send(http, header + blob, headers=headers), 400, "NaN or infinity")


def test_a_value_too_large_for_the_datatype_is_400(http):
    assert refused(send(http, with_input(data=[1e39, 1, 2, 3])), 400, "NaN or infinity")


def test_binary_data_shorter_than_claimed_is_400(http):
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    )
    headers = {"Inference-Header-Content-Length": str(len(header))}

    assert refused(send(http, header + b"\0" * 8, headers=headers), 400, "only 8 remain")


def test_a_header_length_past_the_body_is_400(http):
    body = with_input()
    headers = {"Inference-Header-Content-Length": str(len(body) + 1)}

    assert refused(send(http, body, headers=headers), 400, "no larger than the body")


@pytest.mark.parametrize("length", [b"\xb2", b"1\xb9", b"+12"])
def test_a_header_length_that_is_not_ascii_digits_is_400_not_500(http, length):
    # "²" (latin-1 0xb2) is a digit to str.isdigit() but not to int(): it was a 500.
    headers = [(b"inference-header-content-length", length)]

    answer = http.post(INFER, content=with_input(), headers=headers)

    assert refused(answer, 400, "must be a byte count")


def test_an_unknown_requested_output_is_400(http):
    body = orjson.dumps({"inputs": [GOOD_INPUT], "outputs": [{"name": "nope"}]})

    assert refused(send(http, body), 400, "unknown output 'nope'")


def test_a_body_over_the_limit_is_413_before_it_is_read(http):
    body = b"x" * (GATEWAY_MAX_BODY_BYTES + 1)

    assert refused(send(http, body), 413, f"larger than the {GATEWAY_MAX_BODY_BYTES} bytes")


def test_a_chunked_body_over_the_limit_is_413(url):
    def chunks():
        for _ in range(GATEWAY_MAX_BODY_BYTES // 1024 + 2):
            yield b"x" * 1024

    response = httpx.post(f"{url}{INFER}", content=chunks(), timeout=30)

    assert refused(response, 413, "larger than")


def test_an_unknown_model_is_404(http):
    assert refused(
        send(http, with_input(), path="/v2/models/nope/infer"), 404, "unknown model 'nope'"
    )


def test_an_unknown_endpoint_is_404(http):
    assert refused(
        send(http, with_input(), path="/v2/models/iris/predict"), 404, "no such endpoint"
    )


# -- a property over bodies ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input-0", "x", ""]) | json_values,
        "shape": st.lists(st.integers(-2, 6), max_size=3) | json_values,
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "BYTES", "fp32", "X"])
        | json_values,
        "data": st.lists(st.floats(allow_nan=False, width=32) | st.integers(-300, 300), max_size=12)
        | st.lists(st.lists(st.floats(-10, 10), max_size=4), max_size=3)
        | json_values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-1, 64)})
        | json_values,
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=8) | json_values,
        "inputs": st.lists(tensors, max_size=3) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=12)}), max_size=2)
        | json_values,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_output": st.booleans() | json_values}
        ),
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, trailer=st.binary(max_size=64), split=st.booleans())
def test_no_body_gets_a_server_error(http, body, trailer, split):
    header = json.dumps(body).encode()  # any integer, however large
    headers = {"Inference-Header-Content-Length": str(len(header))} if split else {}

    response = send(http, header + trailer if split else header, headers=headers)

    assert response.status_code < 500, response.text
    assert response.status_code == 200 or "error" in response.json()
