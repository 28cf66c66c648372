from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from swaps.engine.runtimes import RuntimeModel, load
from swaps.engine.spec import VersionSpec

from .fleet_models import gated_spec
from .processes import ReplicaProcess, deploy, drop_namespace, start_replica

NO_REDIS_MESSAGE = (
    "REDIS_URL is {problem}. Tests need a real Redis: run them with `make test`, or "
    "`python scripts/with_redis.py -- python -m pytest ...` (starts a private "
    "redis-server), or set REDIS_URL=redis://HOST:PORT/0 to use one you run."
)


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "")
    if not url:
        pytest.fail(NO_REDIS_MESSAGE.format(problem="not set"), pytrace=False)
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            NO_REDIS_MESSAGE.format(problem=f"set to {url!r} but PING failed ({exc})"),
            pytrace=False,
        )
    return url


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    namespace = f"test-{uuid.uuid4().hex}"
    yield namespace
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


def pytest_report_header(config: pytest.Config) -> str:
    # CI runs the suite once per database; say which one this run is on.
    from django.conf import settings

    return f"database backend: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"


@pytest.fixture(scope="session")
def demo_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder `iris_specs` builds the iris artifacts into, once per session."""
    return tmp_path_factory.mktemp("demo-models")


@pytest.fixture(scope="session")
def iris_specs(demo_models_dir: Path) -> dict[str, VersionSpec]:
    """The iris demo versions by version: "1" sklearn, "2" onnx, "3" broken python."""
    # Imported here: scikit-learn and skl2onnx cost every pytest process seconds to import,
    # and many runs (the suite's own inner pytest runs, the engine's) never build them.
    from swaps.demo_models import build_demo_models

    return {spec.version: spec for spec in build_demo_models(demo_models_dir)}


@pytest.fixture(scope="session")
def iris_models(iris_specs: dict[str, VersionSpec]) -> dict[str, RuntimeModel]:
    """Every iris demo version, loaded once."""
    return {version: load(spec) for version, spec in iris_specs.items()}


GATEWAY_MAX_BODY_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def gateway_replica(redis_url, iris_specs, tmp_path_factory) -> Iterator[ReplicaProcess]:
    """One replica process serving iris 1 (active) and 2 (loaded, pinned only) and held 1.

    Iris 2 declares no outputs here, so it serves both of its ONNX outputs (label and
    probabilities): a model of several outputs. Version 3 of iris is registered but
    never loaded. Bodies over 64 KiB are refused.
    """
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    replica = start_replica(
        namespace=namespace,
        redis_url=redis_url,
        log_dir=tmp_path_factory.mktemp("gateway"),
        env={"HOTSWAP_MAX_BODY_BYTES": str(GATEWAY_MAX_BODY_BYTES)},
    )

    iris = {**iris_specs, "2": replace(iris_specs["2"], outputs=())}
    try:
        deploy(
            redis_url,
            namespace,
            [*iris.values(), gated_spec()],
            routes={"iris": "1", "held": "1"},
            warm=(("iris", "2"),),
        )
        yield replica
    finally:
        replica.stop()
        drop_namespace(redis_url, namespace)


def pytest_configure(config: pytest.Config) -> None:
    # The control plane's fixtures (alice, bob, mallory, iris, serving_version, ...) need
    # Django's models; a run with `-p no:django` (the engine's own) goes without them.
    if config.pluginmanager.has_plugin("django"):
        config.pluginmanager.import_plugin("tests.control_plane")
        # `live_settings`, `replica` and `worker`: real processes for the live tests.
        config.pluginmanager.import_plugin("tests.live_fleet")
