"""The practical limit for serving iris: a bare ASGI app with nothing but the model.

No routing table, no in-flight counting, no validation, no fleet: parse the V2 JSON,
run the same iris version 1 inline, answer. bench/serving.py runs it under the same
server as a replica, in the same run, as the baseline.

    BENCH_IRIS_ARTIFACT=/path/iris-1.joblib uvicorn bench.servers.bare_iris:app --http httptools
"""

from __future__ import annotations

import gc
import os

import joblib
import numpy as np
import orjson

MODEL = joblib.load(os.environ["BENCH_IRIS_ARTIFACT"])
HEADERS = [(b"content-type", b"application/json")]
gc.freeze()


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    tensor = orjson.loads(body)["inputs"][0]
    features = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    labels = MODEL.predict(features)
    answer = orjson.dumps(
        {
            "model_name": "iris",
            "model_version": "1",
            "outputs": [
                {
                    "name": "predict",
                    "datatype": "INT64",
                    "shape": list(labels.shape),
                    "data": labels,
                }
            ],
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": answer})
