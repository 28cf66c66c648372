"""What serving a version in a process of its own would add to each request.

Today a replica runs every version's `predict` in its own process (on model threads);
its trial load already happens in a child (engine/sandbox.py). Serving each version in
a child too would isolate a crash during serving and return a version's memory whole on
unload, at the price of a hop per request: the inputs sent to the child, the outputs
sent back. This times that hop for iris (one 1x4 FP32 row, and a 256-row batch) over a
`multiprocessing` pipe, the cheapest hop Python offers without shared memory, against
the same `predict` called in-process, interleaved in rounds so both see the same noise.
It prints medians per call, the ratio, and the hop's share of a replica's whole request
as `bench/serving.py` measures it.

    .venv/bin/python bench/version_process.py [--rounds 40 --calls 500]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from swaps.demo_models import build_demo_models
from swaps.engine import runtimes

# A replica's whole request for this row, p50, on this machine (bench/serving.py, README
# "Serving"): what the hop would be added to.
REPLICA_REQUEST_MS = 1.4


def _serve(connection, spec) -> None:
    """The child: load the version, then answer predict requests until told to stop."""
    model = runtimes.load(spec, measure=False)
    connection.send_bytes(b"ready")
    while True:
        message = connection.recv_bytes()
        if not message:
            return
        inputs = pickle.loads(message)
        connection.send_bytes(pickle.dumps(model.predict(inputs), protocol=5))


def _per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _compare(name: str, model, connection, inputs, *, rounds: int, calls: int) -> None:
    def in_process() -> None:
        model.predict(inputs)

    def over_a_pipe() -> None:
        connection.send_bytes(pickle.dumps(inputs, protocol=5))
        pickle.loads(connection.recv_bytes())

    for fn in (in_process, over_a_pipe):
        _per_call(fn, calls // 4)
    local, piped = [], []
    for i in range(rounds):
        order = (in_process, over_a_pipe) if i % 2 else (over_a_pipe, in_process)
        for fn in order:
            (local if fn is in_process else piped).append(_per_call(fn, calls))
    local_us, piped_us = statistics.median(local) * 1e6, statistics.median(piped) * 1e6
    hop_us = piped_us - local_us
    print(
        f"{name}: in-process predict {local_us:.1f} us, through a child {piped_us:.1f} us "
        f"(x{piped_us / local_us:.2f}); the hop adds {hop_us:.1f} us, "
        f"{hop_us / (REPLICA_REQUEST_MS * 10):.1f} % of a replica's {REPLICA_REQUEST_MS} ms request"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory() as tmp:
        spec = build_demo_models(Path(tmp))[0]  # iris 1, scikit-learn
        model = runtimes.load(spec, measure=False)
        ours, theirs = multiprocessing.Pipe()
        child = multiprocessing.get_context("spawn").Process(target=_serve, args=(theirs, spec))
        child.start()
        try:
            assert ours.recv_bytes() == b"ready"
            row = {"input-0": np.array([[5.9, 3.0, 5.1, 1.8]], dtype=np.float32)}
            batch = {"input-0": np.tile(row["input-0"], (256, 1))}
            _compare("1 row", model, ours, row, rounds=args.rounds, calls=args.calls)
            _compare("256 rows", model, ours, batch, rounds=args.rounds, calls=args.calls)
        finally:
            ours.send_bytes(b"")
            child.join(timeout=10)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) after")


if __name__ == "__main__":
    main()
