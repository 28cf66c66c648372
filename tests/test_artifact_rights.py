"""Registering a version is not a licence to run code or to read the host's files.

Before, anyone who could register a version could name any importable callable
(`os:getpid`) or their own module as a python factory, or a pickle, and have it run in
every replica; and any path (`/etc/passwd`, `/proc/self/environ`, `../../`, a symlink),
with the error saying whether the file existed. Now code needs swaps.register_code (or a
module the environment trusts), and artifacts must lie under HOTSWAP_ARTIFACT_ROOTS.
"""

from __future__ import annotations

import os

import pytest

from swaps.models import AuditEntry, ModelVersion

from .control_plane import client_for, make_user, post_json

REGISTERS = ("register_version",)
VERSION = {
    "version": "9",
    "sample_input": [[5.1, 3.5, 1.4, 0.2]],
    "expected_output_shape": [-1],
    "expected_output_dtype": "INT64",
    "memory_limit_bytes": 100_000_000,
    "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}],
}


@pytest.fixture
def registrar(db):
    """May register versions, not code."""
    return make_user("registrar", REGISTERS)


def register(user, runtime: str, artifact: str, *, version: str = "9"):
    body = {**VERSION, "version": version, "runtime": runtime, "artifact": artifact}
    return post_json(client_for(user), "/api/models/iris/versions", body)


@pytest.mark.parametrize(
    ("runtime", "artifact"),
    # (`os:getpid`, accepted here once, is now refused as no model: tests/test_model_probe.py)
    [("python", "swaps.demo_models:broken_iris"), ("sklearn", "{iris}")],
)
def test_a_version_whose_artifact_is_code_needs_the_register_code_permission(
    registrar, alice, iris_specs, runtime, artifact
):
    artifact = artifact.format(iris=iris_specs["1"].artifact)

    refused = register(registrar, runtime, artifact)
    accepted = register(alice, runtime, artifact)  # an operator here holds register_code

    assert refused.status_code == 403
    assert "needs the swaps.register_code permission" in refused.json()["error"]
    assert accepted.status_code == 201, accepted.json()
    refusal = AuditEntry.objects.get(actor="registrar")
    assert (refusal.action, refusal.outcome) == ("register_version", "refused")


def test_an_onnx_version_needs_no_code_permission(registrar, iris_specs):
    response = register(registrar, "onnx", iris_specs["2"].artifact)

    assert response.status_code == 201, response.json()


def test_a_factory_from_a_trusted_module_needs_no_code_permission(registrar, settings):
    settings.HOTSWAP_CODE_MODULES = ("swaps.demo_models",)

    trusted = register(registrar, "python", "swaps.demo_models:broken_iris")
    lookalike = register(registrar, "python", "swaps.demo_models_evil:x", version="10")

    assert trusted.status_code == 201, trusted.json()
    assert lookalike.status_code == 403


@pytest.mark.parametrize(
    "artifact",
    ["/etc/passwd", "/proc/self/environ", "/nonexistent/model.joblib", "{root}/../../etc/hosts"],
)
def test_an_artifact_outside_the_roots_is_not_allowed_whether_or_not_it_exists(
    alice, settings, tmp_path, artifact
):
    settings.HOTSWAP_ARTIFACT_ROOTS = (str(tmp_path.resolve()),)

    response = register(alice, "onnx", artifact.format(root=tmp_path))

    assert response.status_code == 400
    assert response.json()["fields"]["artifact"] == (
        f"not allowed: an artifact must be a file under {tmp_path.resolve()}"
    )
    assert not ModelVersion.objects.filter(version="9").exists()


def test_a_symlink_under_a_root_that_leads_out_of_it_is_not_allowed(
    alice, settings, tmp_path, iris_specs
):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = outside / "model.onnx"
    secret.write_bytes(open(iris_specs["2"].artifact, "rb").read())
    os.symlink(secret, root / "model.onnx")
    os.symlink(outside, root / "shared")
    settings.HOTSWAP_ARTIFACT_ROOTS = (str(root.resolve()),)

    through_link = register(alice, "onnx", str(root / "model.onnx"))
    through_dir = register(alice, "onnx", str(root / "shared" / "model.onnx"))

    assert through_link.status_code == through_dir.status_code == 400
    assert "not allowed" in through_link.json()["fields"]["artifact"]


def test_a_version_records_the_file_its_path_resolved_to(alice, settings, tmp_path, iris_specs):
    root = tmp_path / "root"
    (root / "releases").mkdir(parents=True)
    model = root / "releases" / "v9.onnx"
    model.write_bytes(open(iris_specs["2"].artifact, "rb").read())
    os.symlink(model, root / "current.onnx")
    settings.HOTSWAP_ARTIFACT_ROOTS = (str(root.resolve()),)

    response = register(alice, "onnx", str(root / "current.onnx"))

    # Replicas load what was checked, even if `current.onnx` is repointed afterwards.
    assert response.status_code == 201, response.json()
    assert ModelVersion.objects.get(version="9").artifact == str(model.resolve())
