"""The V2 protocol on a real replica process, as V2 clients use it.

The replica (`gateway_replica`, conftest.py) serves iris 1 (active), iris 2 (loaded,
reachable pinned) and held 1; iris 3 is registered but not loaded.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import orjson
import pytest
import redis
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from swaps.engine.fleet_keys import FleetKeys
from swaps.engine.latency import total, window
from swaps.engine.reports import ReplicaReport, opened_report
from swaps.engine.results import utcnow

from .fleet_models import Gate
from .processes import fleet_seal, wait_until

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]  # a setosa: class 0
V2_REQUEST = {
    "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW}]
}


@pytest.fixture(scope="module")
def url(gateway_replica) -> str:
    return gateway_replica.url


@pytest.fixture(scope="module")
def triton_client(gateway_replica):
    client = triton.InferenceServerClient(url=f"127.0.0.1:{gateway_replica.port}")
    yield client
    client.close()


def post(url: str, path: str, body=V2_REQUEST, **options) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, **options)


# -- server and model metadata, health -------------------------------------------------------


def test_server_metadata_names_the_binary_extension(url):
    metadata = httpx.get(f"{url}/v2").json()

    assert metadata["name"] == "hotswap"
    assert "binary_tensor_data" in metadata["extensions"]


def test_live_and_ready_answer_200(url):
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}


def test_model_metadata_describes_the_active_version(url):
    metadata = httpx.get(f"{url}/v2/models/iris").json()

    assert metadata["name"] == "iris"
    assert metadata["versions"] == ["1", "2", "3"]
    assert metadata["platform"] == "sklearn"
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [-1]}]


def test_version_metadata_describes_that_version(url):
    metadata = httpx.get(f"{url}/v2/models/iris/versions/2").json()

    assert metadata["platform"] == "onnxruntime_onnx"
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"]


def test_model_ready_names_the_version_that_serves(url):
    assert httpx.get(f"{url}/v2/models/iris/ready").json() == {
        "name": "iris",
        "version": "1",
        "ready": True,
    }


def test_a_version_not_loaded_here_is_not_ready(url):
    response = httpx.get(f"{url}/v2/models/iris/versions/3/ready")

    assert response.status_code == 503
    assert "not loaded" in response.json()["error"]


def test_an_unknown_model_is_404_everywhere(url):
    assert httpx.get(f"{url}/v2/models/nope").status_code == 404
    assert httpx.get(f"{url}/v2/models/nope/ready").status_code == 404
    assert post(url, "/v2/models/nope/infer").status_code == 404


# -- inference -------------------------------------------------------------------------------


def test_unpinned_inference_is_answered_by_the_active_version(url):
    answer = post(url, "/v2/models/iris/infer").json()

    assert answer["model_name"] == "iris"
    assert answer["model_version"] == "1"
    assert answer["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}]


def test_pinned_inference_is_answered_by_the_pinned_version(url):
    answer = post(url, "/v2/models/iris/versions/2/infer").json()

    assert answer["model_version"] == "2"
    assert answer["outputs"][0]["data"] == [0]


def test_pinned_inference_on_a_version_not_loaded_is_refused(url):
    response = post(url, "/v2/models/iris/versions/3/infer")

    assert response.status_code == 503
    assert response.json() == {"error": "version '3' of model 'iris' is not loaded on this replica"}


def test_pinned_inference_on_an_unknown_version_is_404(url):
    response = post(url, "/v2/models/iris/versions/9/infer")

    assert response.status_code == 404
    assert "unknown version '9'" in response.json()["error"]


def test_the_request_id_is_echoed(url):
    answer = post(url, "/v2/models/iris/infer", {**V2_REQUEST, "id": "req-42"}).json()

    assert answer["id"] == "req-42"


def test_a_batch_answers_one_label_per_row(url):
    rows = [IRIS_ROW, [6.7, 3.0, 5.2, 2.3]]  # a setosa and a virginica
    body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": rows}]}

    answer = post(url, "/v2/models/iris/infer", body).json()

    assert answer["outputs"][0]["shape"] == [2]
    assert answer["outputs"][0]["data"] == [0, 2]


def test_requested_outputs_limit_the_answer(url):
    body = {**V2_REQUEST, "outputs": [{"name": "probabilities"}]}

    answer = post(url, "/v2/models/iris/versions/2/infer", body).json()

    assert [o["name"] for o in answer["outputs"]] == ["probabilities"]
    assert answer["outputs"][0]["shape"] == [1, 3]


def test_binary_outputs_follow_the_json_header_when_asked(url):
    body = {**V2_REQUEST, "parameters": {"binary_data_output": True}}

    response = post(url, "/v2/models/iris/infer", body)

    header_length = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:header_length])
    output = header["outputs"][0]
    assert output["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(response.content[header_length:], dtype="<i8").tolist() == [0]
    assert header["model_version"] == "1"


def test_a_kserve_style_json_request_with_nested_data_works(url):
    # What KServe's REST client sends for a V2 model: plain JSON, rows nested.
    body = {
        "id": "kserve-1",
        "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [IRIS_ROW]}],
    }

    response = post(
        url, "/v2/models/iris/infer", body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [0]


def test_wrong_method_is_405(url):
    assert httpx.get(f"{url}/v2/models/iris/infer").status_code == 405


# -- the Triton client, with its defaults ------------------------------------------------------


def test_triton_client_sees_a_live_ready_server_and_model(triton_client):
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready("iris")
    assert triton_client.get_model_metadata("iris")["platform"] == "sklearn"


def test_triton_client_infers_with_its_default_binary_data(triton_client):
    features = triton.InferInput("input-0", [1, 4], "FP32")
    features.set_data_from_numpy(np.array([IRIS_ROW], dtype=np.float32))  # binary by default

    result = triton_client.infer("iris", [features])

    assert result.as_numpy("label").tolist() == [0]
    assert result.get_response()["model_version"] == "1"


def test_triton_client_infers_a_pinned_version_with_json_data(triton_client):
    features = triton.InferInput("input_0", [1, 4], "FP32")
    features.set_data_from_numpy(np.array([IRIS_ROW], dtype=np.float32), binary_data=False)
    wanted = [triton.InferRequestedOutput("probabilities", binary_data=False)]

    result = triton_client.infer("iris", [features], model_version="2", outputs=wanted)

    assert result.as_numpy("probabilities").shape == (1, 3)
    assert result.get_response()["model_version"] == "2"


def test_triton_client_reports_our_error_message(triton_client):
    features = triton.InferInput("input-0", [1, 4], "FP64")
    features.set_data_from_numpy(np.array([IRIS_ROW], dtype=np.float64))

    with pytest.raises(InferenceServerException, match="datatype FP64; the model takes FP32"):
        triton_client.infer("iris", [features])


# -- a model that takes its time ---------------------------------------------------------------


def test_health_and_other_models_answer_while_a_model_is_busy(gateway_replica, url, redis_url):
    gate = Gate(redis_url, gateway_replica.namespace)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(httpx.post, f"{url}/v2/models/held/infer", json=gate.body(), timeout=30)
        wait_until(
            lambda: in_flight(gateway_replica, redis_url, "held") == 1,
            timeout=10,
            what="the held request to reach the model",
        )

        live = httpx.get(f"{url}/v2/health/live")
        iris = post(url, "/v2/models/iris/infer")

        assert not held.done()
        gate.release()
        assert live.status_code == 200
        assert iris.json()["model_version"] == "1"
        assert held.result().json()["model_version"] == "1"


def in_flight(replica, redis_url: str, model_id: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        report = stored_report(client, replica)
    return sum(report.inflight.get(model_id, {}).values()) if report else 0


def report_of(replica, redis_url: str) -> ReplicaReport:
    with redis.Redis.from_url(redis_url) as client:
        return stored_report(client, replica)


def stored_report(client: redis.Redis, replica) -> ReplicaReport | None:
    keys = FleetKeys(replica.namespace)
    stored = client.get(keys.report(replica.replica_id))
    return opened_report(fleet_seal(), keys, replica.replica_id, stored)


def report_after(replica, redis_url: str, moment) -> ReplicaReport:
    """The first report the replica wrote after `moment`: every request answered before
    then is in it."""
    return wait_until(
        lambda: (r := report_of(replica, redis_url)).reported_at > moment and r,
        timeout=30,
        what="a report newer than the requests",
    )


def counts_after(replica, redis_url: str, moment) -> tuple[int, int, int]:
    """(served, client errors, model failures) of iris 1 in `report_after` `moment`."""
    report = report_after(replica, redis_url, moment)
    return tuple(
        report.count(table, "iris", "1") for table in ("served", "client_errors", "model_failures")
    )


def test_a_refused_request_is_counted_as_a_client_error_never_as_served(
    gateway_replica, url, redis_url
):
    served, refused, failed = counts_after(gateway_replica, redis_url, utcnow())
    wrong = {"inputs": [{**V2_REQUEST["inputs"][0], "datatype": "FP64"}]}

    assert post(url, "/v2/models/iris/versions/1/infer", wrong).status_code == 400
    assert post(url, "/v2/models/iris/versions/1/infer", V2_REQUEST).status_code == 200

    after = counts_after(gateway_replica, redis_url, utcnow())
    assert after == (served + 1, refused + 1, failed)


def test_the_report_counts_each_answered_request_in_its_versions_latency(
    gateway_replica, url, redis_url
):
    before = report_after(gateway_replica, redis_url, utcnow()).latency.get("iris", {})

    for _ in range(3):
        assert post(url, "/v2/models/iris/infer").status_code == 200
    assert post(url, "/v2/models/iris/versions/2/infer").status_code == 200

    after = report_after(gateway_replica, redis_url, utcnow()).latency["iris"]
    assert total(window(before.get("1"), after["1"])) == 3
    assert total(window(before.get("2"), after["2"])) == 1
