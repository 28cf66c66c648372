"""The checked-in gRPC code is what `make grpc-stubs` makes of the checked-in .proto."""

from __future__ import annotations

import shutil
import subprocess
import sys

from .processes import ROOT

STUBS = "swaps/v2_grpc"
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2_grpc.py")


def test_the_generated_grpc_code_matches_the_proto(tmp_path):
    (tmp_path / STUBS).mkdir(parents=True)
    shutil.copy(ROOT / STUBS / "grpc_predict_v2.proto", tmp_path / STUBS)

    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.",
         "--grpc_python_out=.", f"{STUBS}/grpc_predict_v2.proto"],
        cwd=tmp_path,
        check=True,
    )  # fmt: skip

    for name in GENERATED:
        made = (tmp_path / STUBS / name).read_text()
        assert (ROOT / STUBS / name).read_text() == made, f"run `make grpc-stubs`: {name}"
