"""A V2 gRPC load client: `concurrency` callers, each sending ModelInfer as soon as its last
answer came back, for `seconds`; prints one JSON line of what it measured.

Not a benchmark itself (`make bench` runs only bench/*.py): bench/peers.py runs it in
processes of its own, against our replica and against MLServer alike. It talks through
our generated stubs (swaps.v2_grpc), so it must not share a process with
`tritonclient.grpc` (both register the `inference` protobuf package).

    python -m bench.support.grpc_load --target 127.0.0.1:8081 --model iris \\
        [--version 1] [--concurrency 32] [--seconds 8] [--contents typed|raw] \\
        [--start-at UNIX_TIME]

Every client of one run is given the same `--start-at`, so that several processes
measure the same seconds; the requests before it (connecting, warming) are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from swaps.v2_grpc import grpc_predict_v2_pb2 as pb  # noqa: E402
from swaps.v2_grpc import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]  # bench/serving.py's BODY, as gRPC
WARM_UP_CALLS = 20


def infer_request(*, model: str, version: str, contents: str) -> pb.ModelInferRequest:
    """One 1x4 FP32 row: in typed `fp32_contents`, or as a little-endian blob in
    `raw_input_contents` (what tritonclient sends)."""
    tensor = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype="FP32", shape=[1, 4])
    request = pb.ModelInferRequest(model_name=model, model_version=version, inputs=[tensor])
    if contents == "raw":
        request.raw_input_contents.append(np.asarray(IRIS_ROW, dtype="<f4").tobytes())
    else:
        request.inputs[0].contents.fp32_contents.extend(IRIS_ROW)
    return request


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(args: argparse.Namespace) -> dict:
    request = infer_request(model=args.model, version=args.version, contents=args.contents)
    async with grpc.aio.insecure_channel(args.target) as channel:
        infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        for _ in range(WARM_UP_CALLS):
            await infer(request, timeout=30)  # fails the run loudly if the server cannot answer
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        until = started + args.seconds
        latencies: list[float] = []
        failures: list[str] = []

        async def caller() -> None:
            while (sent := time.perf_counter()) < until:
                try:
                    await infer(request, timeout=10)
                except grpc.aio.AioRpcError as error:
                    failures.append(error.code().name)
                else:
                    latencies.append((time.perf_counter() - sent) * 1000)

        await asyncio.gather(*(caller() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_before
    return {
        "seconds": elapsed,
        "latencies_ms": latencies,
        "failed": len(failures),
        "failure_codes": sorted(set(failures)),
        "cpu_seconds": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", default="", help="pin a version (default: the route)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--contents", choices=["typed", "raw"], default="typed")
    parser.add_argument("--start-at", type=float, default=0.0, help="UNIX time to start at")
    print(json.dumps(asyncio.run(measure(parser.parse_args()))))


if __name__ == "__main__":
    main()
