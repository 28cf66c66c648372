from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from swaps.demo_models import build_demo_models
from swaps.engine.runtimes import load

ROOT = Path(__file__).resolve().parent.parent


def test_builds_three_iris_versions(iris_specs):
    assert {v: (s.model_id, s.runtime) for v, s in iris_specs.items()} == {
        "1": ("iris", "sklearn"),
        "2": ("iris", "onnx"),
        "3": ("iris", "python"),
    }


def test_writes_the_file_artifacts_into_the_folder(iris_specs, demo_models_dir):
    assert sorted(p.name for p in demo_models_dir.iterdir()) == ["iris-1.joblib", "iris-2.onnx"]


def test_file_artifacts_are_absolute_paths(iris_specs):
    assert all(Path(iris_specs[v].artifact).is_absolute() for v in ("1", "2"))


def test_every_iris_version_takes_one_row_of_four_floats(iris_specs):
    assert {tuple(np.shape(s.sample_input)) for s in iris_specs.values()} == {(1, 4)}


def test_every_iris_version_declares_int64_labels(iris_specs):
    expected = {(s.expected_output_shape, s.expected_output_dtype) for s in iris_specs.values()}
    assert expected == {((-1,), "INT64")}


def test_rebuilding_into_the_same_folder_gives_the_same_specs(tmp_path):
    first = build_demo_models(tmp_path)
    assert build_demo_models(tmp_path) == first


def test_rebuilding_leaves_no_temporary_files(tmp_path):
    build_demo_models(tmp_path)
    build_demo_models(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iris-1.joblib", "iris-2.onnx"]


@pytest.mark.parametrize(("version", "output"), [("1", "label"), ("2", "label")])
def test_rebuilt_version_predicts_the_same_labels(iris_models, tmp_path, version, output):
    rebuilt = load(build_demo_models(tmp_path)[int(version) - 1])
    rows = np.asarray([[5.9, 3.0, 5.1, 1.8], [6.0, 2.2, 4.0, 1.0], [5.1, 3.5, 1.4, 0.2]])
    again = rebuilt.predict({"input": rows})[output]
    assert again.tolist() == iris_models[version].predict({"input": rows})[output].tolist()


def test_broken_version_answers_three_class_probabilities_per_row(iris_models):
    rows = np.zeros((5, 4), dtype=np.float32)
    assert iris_models["3"].predict({"input-0": rows})["label"].shape == (5, 3)


def test_broken_version_probabilities_sum_to_one(iris_models):
    rows = np.zeros((5, 4), dtype=np.float32)
    probabilities = iris_models["3"].predict({"input-0": rows})["label"]
    assert np.allclose(probabilities.sum(axis=1), 1.0)


def test_command_prints_the_specs_as_json(iris_specs, tmp_path):
    printed = subprocess.run(
        [sys.executable, "-m", "swaps.demo_models", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(printed) == [spec.as_dict() for spec in build_demo_models(tmp_path)]


def test_command_without_a_folder_prints_usage():
    finished = subprocess.run(
        [sys.executable, "-m", "swaps.demo_models"], cwd=ROOT, capture_output=True, text=True
    )
    assert (finished.returncode, finished.stderr.strip()) == (
        2,
        "usage: python -m swaps.demo_models DIR",
    )
