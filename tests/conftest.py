from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from swaps.demo_models import build_demo_models
from swaps.engine.runtimes import RuntimeModel, load
from swaps.engine.spec import VersionSpec

from .processes import drop_namespace


@pytest.fixture(scope="session")
def demo_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder `iris_specs` builds the iris artifacts into, once per session."""
    return tmp_path_factory.mktemp("demo-models")


@pytest.fixture(scope="session")
def iris_specs(demo_models_dir: Path) -> dict[str, VersionSpec]:
    """The iris demo versions by version: "1" sklearn, "2" onnx, "3" broken python."""
    return {spec.version: spec for spec in build_demo_models(demo_models_dir)}


@pytest.fixture(scope="session")
def iris_models(iris_specs: dict[str, VersionSpec]) -> dict[str, RuntimeModel]:
    """Every iris demo version, loaded once."""
    return {version: load(spec) for version, spec in iris_specs.items()}


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    drop_namespace(redis_url, prefix)
