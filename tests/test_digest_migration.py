"""Migration 0009 pins the versions registered before digests to what their files hold.

Runs on SQLite and on PostgreSQL (CI sets DATABASE_URL).
"""

from __future__ import annotations

import shutil

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from swaps.engine.artifacts import digest_of
from swaps.models import ModelVersion

BEFORE_DIGESTS = ("swaps", "0008_version_batching")


@pytest.mark.django_db(transaction=True)
def test_the_migration_pins_versions_whose_file_exists_and_leaves_the_rest_unpinned(
    iris_specs, tmp_path
):
    kept = tmp_path / "iris-1.joblib"
    shutil.copy(iris_specs["1"].artifact, kept)
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE_DIGESTS])
    old = executor.loader.project_state([BEFORE_DIGESTS]).apps
    served = old.get_model("swaps", "ServedModel").objects.create(name="iris")
    for version, runtime, artifact in [
        ("1", "sklearn", str(kept)),
        ("2", "onnx", str(tmp_path / "gone.onnx")),
        ("3", "python", "swaps.demo_models:broken_iris"),
    ]:
        old.get_model("swaps", "ModelVersion").objects.create(
            served_model=served,
            version=version,
            runtime=runtime,
            artifact=artifact,
            sample_input=[[5.1, 3.5, 1.4, 0.2]],
            expected_output_shape=[-1],
            expected_output_dtype="INT64",
            memory_limit_bytes=100_000_000,
        )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert dict(ModelVersion.objects.values_list("version", "artifact_digest")) == {
        "1": digest_of(kept),
        "2": "",  # its file is gone: not pinned, so not checked
        "3": "",  # a python factory has no file
    }
