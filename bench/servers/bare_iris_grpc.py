"""The practical limit for serving iris over gRPC: a bare grpc.aio server with the model.

No routing table, no in-flight counting, no validation, no fleet: decode the one input
(typed `fp32_contents` or `raw_input_contents`), run iris version 1 inline, answer in
the same form. bench/peers.py runs it beside our replica's and MLServer's gRPC, in the
same run, as bench/servers/bare_iris.py is for REST.

    BENCH_IRIS_ARTIFACT=/path/iris-1.joblib python bench/servers/bare_iris_grpc.py --port N
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import grpc
import joblib
import numpy as np

from swaps.v2_grpc import grpc_predict_v2_pb2 as pb
from swaps.v2_grpc import grpc_predict_v2_pb2_grpc as pb_grpc

MODEL = joblib.load(os.environ["BENCH_IRIS_ARTIFACT"])


class BareIris(pb_grpc.GRPCInferenceServiceServicer):
    async def ModelInfer(self, request, context):
        tensor = request.inputs[0]
        if request.raw_input_contents:
            features = np.frombuffer(request.raw_input_contents[0], dtype="<f4")
        else:
            features = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
        labels = MODEL.predict(features.reshape(tuple(tensor.shape)))
        answer = pb.ModelInferResponse(model_name="iris", model_version="1")
        output = answer.outputs.add(name="predict", datatype="INT64", shape=labels.shape)
        if request.raw_input_contents:
            answer.raw_output_contents.append(labels.astype("<i8").tobytes())
        else:
            output.contents.int64_contents.extend(labels.tolist())
        return answer


async def serve(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(BareIris(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    gc.freeze()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
