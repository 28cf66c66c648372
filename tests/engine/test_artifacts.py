"""Artifact digests: what a version is pinned by, and the load that refuses other bytes."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from swaps.engine.artifacts import digest_of
from swaps.engine.errors import LoadError
from swaps.engine.runtimes import load
from swaps.engine.spec import VersionSpec
from tests.engine.conftest import python_spec


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


FILES = {"model.onnx": b"weights", "tokenizer/vocab.txt": b"a\nb\n", "config.json": b"{}"}


def test_a_file_digest_is_the_sha256_of_its_bytes(tmp_path):
    artifact = tmp_path / "model.joblib"
    artifact.write_bytes(b"some weights")

    assert digest_of(artifact) == "sha256:" + hashlib.sha256(b"some weights").hexdigest()


def test_a_directory_digest_does_not_depend_on_the_order_files_were_written(tmp_path):
    forwards = tree(tmp_path / "a", FILES)
    backwards = tree(tmp_path / "b", dict(reversed(FILES.items())))

    assert digest_of(forwards) == digest_of(backwards)
    assert digest_of(forwards).startswith("sha256:")


@pytest.mark.parametrize(
    "change",
    [
        {"model.onnx": b"weightz"},  # one byte
        {"model.onnx": b"weights "},  # one byte more
        {"tokenizer/vocab.txt": None, "tokenizer/vocab.tx": b"a\nb\n"},  # a name
        {"tokenizer/vocab.txt": None, "vocab.txt": b"a\nb\n"},  # a file moved up
        {"extra": b""},  # an empty file added
        {"config.json": None},  # a file removed
    ],
)
def test_a_directory_digest_changes_when_any_byte_or_name_does(tmp_path, change):
    original = tree(tmp_path / "a", FILES)
    changed = tree(tmp_path / "b", FILES)
    for name, content in change.items():
        if content is None:
            (changed / name).unlink()
        else:
            tree(changed, {name: content})

    assert digest_of(changed) != digest_of(original)


def test_a_symlink_inside_a_directory_is_refused(tmp_path):
    artifact = tree(tmp_path / "model", FILES)
    (artifact / "secrets").symlink_to("/etc/hostname")

    with pytest.raises(ValueError, match="is a symlink"):
        digest_of(artifact)


def test_a_fifo_is_refused_rather_than_read_for_ever(tmp_path):
    os.mkfifo(tmp_path / "pipe")

    with pytest.raises(ValueError, match="neither a regular file nor a directory"):
        digest_of(tmp_path / "pipe")


@pytest.fixture
def pinned(iris_specs, tmp_path) -> VersionSpec:
    """Iris 1 on a copy of its file, pinned to the copy's digest as registration does."""
    artifact = tmp_path / "iris.joblib"
    shutil.copy(iris_specs["1"].artifact, artifact)
    return replace(iris_specs["1"], artifact=str(artifact), artifact_digest=digest_of(artifact))


def changed_after_registration(spec: VersionSpec) -> str:
    """Append a byte to the spec's file (a pickle still loads: it ends at its STOP)."""
    with open(spec.artifact, "ab") as artifact:
        artifact.write(b"\0")
    return digest_of(spec.artifact)


def mismatch(spec: VersionSpec, actual: str) -> str:
    return (
        f"version '1' of model 'iris' is not the artifact it was registered with: "
        f"{spec.artifact} has digest {actual}, expected {spec.artifact_digest} (the file "
        "changed after registration; register the new file as a new version)"
    )


def test_a_file_that_matches_its_digest_loads(pinned):
    assert load(pinned).platform == "sklearn"


def test_a_file_changed_after_registration_fails_its_load_naming_both_digests(pinned):
    actual = changed_after_registration(pinned)

    with pytest.raises(LoadError) as failure:
        load(pinned)

    assert failure.value.message == mismatch(pinned, actual)
    # Without the digest the changed file loads: it is the check that refuses it.
    assert load(replace(pinned, artifact_digest="")).platform == "sklearn"


def test_a_spec_published_without_a_digest_still_loads(iris_specs):
    data = iris_specs["1"].as_dict()
    del data["artifact_digest"]  # a spec an older control plane published

    spec = VersionSpec.from_dict(data)

    assert spec.artifact_digest == ""
    assert load(spec).platform == "sklearn"


def test_a_python_factory_has_no_digest_and_loads():
    spec = python_spec("1")

    assert spec.artifact_digest == ""
    assert load(spec).platform == "python"
