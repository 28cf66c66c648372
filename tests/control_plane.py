"""Fixtures for the control plane's tests (a pytest plugin, loaded by conftest.py).

Each test gets its own Redis namespace and RQ queue (`control_plane`), and the engine's
in-process stack behind the control plane's engine seam (`engine`). The records come
with meaning: `serving_version` (iris 1, active), `candidate_version` (iris 2, healthy),
`broken_version` (iris 3, fails its health check); users `alice` (operator: swap,
request rollbacks, register, code included), `bob` (approver: approve and request rollbacks) and
`mallory` (no rights).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from swaps import fleet_state, jobs, swapping
from swaps.engine.results import HealthCheckResult
from swaps.engine.spec import VersionSpec
from swaps.models import ModelVersion, ServedModel, Swap
from tests.fleet_models import gated_spec

from .local_engine import LocalEngine

OPERATOR = ("start_swap", "request_rollback", "register_version", "register_code")
APPROVER = ("approve_rollback", "request_rollback")


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    """The anonymous refusals counted per address (swaps/anonymous_audit.py) start at
    nothing in each test: every test client comes from 127.0.0.1."""
    cache.clear()


@pytest.fixture(autouse=True)
def artifact_roots(settings, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests build artifacts under pytest's temporary directory: a root, beside the
    default one (and passed on to the processes tests start: tests/workers.py)."""
    base = str(tmp_path_factory.getbasetemp().resolve())
    settings.HOTSWAP_ARTIFACT_ROOTS = (*settings.HOTSWAP_ARTIFACT_ROOTS, base)


@pytest.fixture
def control_plane(settings, redis_url: str, redis_namespace: str) -> Iterator[str]:
    """This test's own Redis namespace and RQ queue; their keys are deleted afterwards."""
    queue = f"{redis_namespace}-swaps"
    settings.REDIS_URL = redis_url
    settings.HOTSWAP_NAMESPACE = redis_namespace
    settings.HOTSWAP_RQ_QUEUE = queue
    settings.RQ_QUEUES = {queue: {"URL": redis_url, "DEFAULT_TIMEOUT": 3600}}
    settings.HOTSWAP_DRAIN_TIMEOUT = 5.0
    yield redis_namespace
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"rq:*{redis_namespace}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def engine(control_plane: str, iris_specs: dict[str, VersionSpec]) -> Iterator[LocalEngine]:
    local = LocalEngine([*iris_specs.values(), gated_spec()])
    with fleet_state.use_engine(local.open):
        yield local


def make_user(username: str, codenames: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(username=username)  # no password: tests log in directly
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="swaps", codename__in=codenames)
    )
    return User.objects.get(pk=user.pk)  # a fresh instance: no stale permission cache


@pytest.fixture
def alice(db) -> User:
    return make_user("alice", OPERATOR)


@pytest.fixture
def bob(db) -> User:
    return make_user("bob", APPROVER)


@pytest.fixture
def mallory(db) -> User:
    return make_user("mallory")


def add_version(served: ServedModel, spec: VersionSpec, **fields) -> ModelVersion:
    data = spec.as_dict()
    return ModelVersion.objects.create(
        served_model=served,
        version=spec.version,
        runtime=spec.runtime,
        artifact=spec.artifact,
        sample_input=data["sample_input"],
        expected_output_shape=data["expected_output_shape"],
        expected_output_dtype=spec.expected_output_dtype,
        memory_limit_bytes=spec.memory_limit_bytes,
        inputs=data["inputs"],
        outputs=data["outputs"],
        **fields,
    )


def serve(served: ServedModel, specs: list[VersionSpec]) -> ServedModel:
    """Register `specs` for `served`, the first one active, and publish that to the fleet."""
    first, *others = specs
    active = add_version(served, first, first_served_at=timezone.now())
    for spec in others:
        add_version(served, spec)
    served.active_version = active
    served.save()
    fleet_state.republish_from_database()
    return served


@pytest.fixture
def iris(db, engine: LocalEngine, iris_specs: dict[str, VersionSpec]) -> ServedModel:
    """Model iris: versions 1 (serving), 2 and 3 registered, published to the engine."""
    return serve(ServedModel.objects.create(name="iris"), [iris_specs[v] for v in "123"])


@pytest.fixture
def serving_version(iris: ServedModel) -> ModelVersion:
    return iris.versions.get(version="1")


@pytest.fixture
def candidate_version(iris: ServedModel) -> ModelVersion:
    return iris.versions.get(version="2")


@pytest.fixture
def broken_version(iris: ServedModel) -> ModelVersion:
    return iris.versions.get(version="3")


@pytest.fixture
def served_before(iris: ServedModel, alice: User, candidate_version) -> ModelVersion:
    """iris swapped from 1 to 2 (completed): version 1 is a rollback target now."""
    swap = swapping.start_swap(
        model="iris", from_version="1", to_version="2", user=alice, via="test"
    )
    assert jobs.run_swap(swap.pk) == Swap.State.COMPLETED
    return iris.versions.get(version="1")


@pytest.fixture
def unhealthy_target(engine: LocalEngine, monkeypatch) -> str:
    """Every health check fails, for the returned reason: no target can take traffic."""
    reason = "boom"

    async def unhealthy(model_id: str, version: str) -> HealthCheckResult:
        return HealthCheckResult.failure(model_id=model_id, version=version, reason=reason)

    monkeypatch.setattr(engine.versions, "check_health", unhealthy)
    return reason


def client_for(user: User | None, *, csrf_checks: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf_checks)
    if user is not None:
        client.force_login(user)
    return client


def post_json(client: Client, path: str, body=None, **extra):
    import json

    return client.post(
        path,
        data=json.dumps(body if body is not None else {}),
        content_type="application/json",
        **extra,
    )
