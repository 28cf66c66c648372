"""A replica's front door: floods of large bodies or idle connections do not take it down.

Before, forty concurrent 6 MiB bodies were decoded on the event loop, one after the
other, and delayed the heartbeats until the fleet counted the replica dead. Now a large
body is decoded on a thread, and at most LARGE_BODIES_AT_ONCE of them are taken at once;
connections past HOTSWAP_MAX_CONNECTIONS are answered 503 at once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from swaps.gateway import LARGE_BODIES_AT_ONCE, LARGE_BODY_BYTES

from .fleet_models import Gate, gated_spec
from .processes import ReplicaProcess, deploy, start_replica, wait_until
from .test_gateway import in_flight

pytestmark = pytest.mark.fleet


@pytest.fixture
def held_replica(redis_url, redis_namespace, tmp_path) -> Iterator[ReplicaProcess]:
    replica = start_replica(namespace=redis_namespace, redis_url=redis_url, log_dir=tmp_path)
    try:
        deploy(redis_url, redis_namespace, [gated_spec()], routes={"held": "1"})
        yield replica
    finally:
        replica.stop()


def large_body(gate: Gate) -> dict:
    """A request held until `gate` opens, over LARGE_BODY_BYTES of JSON (zeros are not
    held: only the first row names the gate)."""
    rows = LARGE_BODY_BYTES // 2 + 1
    data = [gate.name] + [0] * rows
    row = {"name": "input-0", "shape": [len(data), 1], "datatype": "FP32", "data": data}
    return {"inputs": [row]}


def test_a_replica_holding_many_large_requests_still_answers_and_serves_them_all(
    held_replica, redis_url, redis_namespace
):
    gates = [Gate(redis_url, redis_namespace) for _ in range(LARGE_BODIES_AT_ONCE + 2)]
    answers: list[int] = []

    def send(gate: Gate) -> None:
        response = httpx.post(
            f"{held_replica.url}/v2/models/held/infer", json=large_body(gate), timeout=60
        )
        answers.append(response.status_code)

    senders = [threading.Thread(target=send, args=(gate,)) for gate in gates]
    for sender in senders:
        sender.start()
    try:
        wait_until(
            lambda: in_flight(held_replica, redis_url, "held") >= LARGE_BODIES_AT_ONCE,
            timeout=60,
            what="large requests in flight",
        )
        # The loop is free: health, a small request and the heartbeat still go through.
        assert httpx.get(f"{held_replica.url}/v2/health/live", timeout=5).status_code == 200
        small = Gate(redis_url, redis_namespace)
        small.release()
        response = httpx.post(
            f"{held_replica.url}/v2/models/held/infer", json=small.body(), timeout=30
        )
        assert response.status_code == 200
    finally:
        for gate in gates:
            gate.release()
        for sender in senders:
            sender.join(timeout=60)

    assert answers == [200] * len(gates)


def test_connections_past_the_limit_are_answered_503_not_held_open(
    redis_url, redis_namespace, tmp_path
):
    # Before, 500 idle connections were all accepted and held.
    replica = start_replica(
        namespace=redis_namespace,
        redis_url=redis_url,
        log_dir=tmp_path,
        env={"HOTSWAP_MAX_CONNECTIONS": "4"},
    )
    idle = [socket.create_connection(("127.0.0.1", replica.port)) for _ in range(4)]
    try:
        refused = httpx.get(f"{replica.url}/v2/health/live", timeout=10)
        for connection in idle:
            connection.close()
        served = wait_until(
            lambda: httpx.get(f"{replica.url}/v2/health/live", timeout=10).status_code == 200,
            timeout=30,
            what="the idle connections to close",
        )
    finally:
        for connection in idle:
            connection.close()
        replica.stop()

    assert refused.status_code == 503
    assert served
