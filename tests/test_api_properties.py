"""Any body sent to the API's state-changing endpoints: a 2xx, or a 4xx with a message.

Never a 500, and the records change only when the answer is a 2xx. Hypothesis sends
arbitrary JSON, objects with the endpoints' own field names holding values of any
type, and bytes that are not JSON at all.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swaps.models import ModelVersion, RollbackRequest, ServedModel, Swap
from swaps.registry import VERSION_FIELDS

from .control_plane import client_for

pytestmark = pytest.mark.django_db

EXAMPLES = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["1", "2", "3", "", "iris", "sklearn", "python", "FP32", "-1"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


def bodies(fields: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """Objects over the endpoint's fields (and strangers), any JSON, or not JSON at all."""
    known = st.dictionaries(st.sampled_from(fields), values, max_size=len(fields))
    mixed = st.dictionaries(st.sampled_from(fields) | st.text(max_size=8), values, max_size=4)
    as_json = st.one_of(known, mixed, values).map(lambda v: json.dumps(v).encode())
    return as_json | st.binary(max_size=64)


def snapshot() -> tuple:
    """Everything a state-changing API call may change."""
    return (
        Swap.objects.count(),
        RollbackRequest.objects.count(),
        ModelVersion.objects.count(),
        ServedModel.objects.count(),
        tuple(ServedModel.objects.order_by("pk").values_list("active_version_id", flat=True)),
    )


def check(client, path: str, raw: bytes) -> None:
    before = snapshot()
    response = client.post(path, data=raw, content_type="application/json")
    assert response.status_code < 500, response.content
    if response.status_code >= 300:
        assert 400 <= response.status_code < 500
        message = response.json()["error"]
        assert isinstance(message, str) and message
        assert snapshot() == before


# One signed-in client per test, not per example: a session of its own is not what varies.
@pytest.fixture
def as_alice(alice):
    return client_for(alice)


@pytest.fixture
def as_mallory(mallory):
    return client_for(mallory)


@given(raw=bodies(("from_version", "to_version")))
@EXAMPLES
def test_any_swap_body_gets_2xx_or_a_4xx_that_changes_nothing(as_alice, iris, raw):
    check(as_alice, "/api/models/iris/swaps", raw)


@given(raw=bodies(("target_version", "reason")))
@EXAMPLES
def test_any_rollback_body_gets_2xx_or_a_4xx_that_changes_nothing(as_alice, served_before, raw):
    check(as_alice, "/api/models/iris/rollbacks", raw)


@given(raw=bodies(VERSION_FIELDS))
@EXAMPLES
def test_any_version_body_gets_2xx_or_a_4xx_that_changes_nothing(as_alice, iris, raw):
    check(as_alice, "/api/models/iris/versions", raw)


@given(raw=bodies(("from_version", "to_version")))
@EXAMPLES
def test_any_body_from_someone_without_the_permission_changes_nothing(as_mallory, iris, raw):
    check(as_mallory, "/api/models/iris/swaps", raw)
