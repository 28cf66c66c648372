"""Adaptive batching where it pays: a random forest, one row per request, concurrency 64.

One replica serves two versions of the same scikit-learn random forest (200 trees,
iris): version 1 unbatched, version 2 batched (`--max-batch-size`, `--max-delay-ms`).
wrk drives each version's pinned endpoint in turns, `--rounds` times, and the median run
of each is printed with the ratio batched / unbatched, in the same run. A forest's
`predict` costs about the same for one row as for thirty, so merging requests turns
many predicts into few.

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/batching.py \\
        [--seconds 8] [--rounds 3] [--concurrency 64]

(`make bench` starts a private Redis when REDIS_URL is unset.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the process helpers live in tests/

import joblib  # noqa: E402
import numpy as np  # noqa: E402

from bench.serving import BODY, WRK_SCRIPT, median_run, run_wrk  # noqa: E402
from swaps.engine.spec import TensorSpec, VersionSpec  # noqa: E402
from tests.processes import deploy, drop_namespace, start_replica, wait_until  # noqa: E402

TREES = 200


def forest_specs(directory: Path, *, max_batch_size: int, max_delay_ms: float) -> list[VersionSpec]:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    features, labels = load_iris(return_X_y=True)
    # n_jobs=1: the replica's model threads are the parallelism; joblib's would fight them.
    forest = RandomForestClassifier(n_estimators=TREES, random_state=0, n_jobs=1)
    forest.fit(features.astype(np.float32), labels)
    path = directory / "forest.joblib"
    joblib.dump(forest, path)
    unbatched = VersionSpec(
        model_id="forest",
        version="1",
        runtime="sklearn",
        artifact=str(path),
        sample_input=[[5.1, 3.5, 1.4, 0.2]],
        expected_output_shape=(-1,),
        expected_output_dtype="INT64",
        memory_limit_bytes=512 * 2**20,
        inputs=(TensorSpec("input-0", "FP32", (-1, 4)),),
        outputs=(TensorSpec("label", "INT64", (-1,)),),
    )
    batched = replace(
        unbatched, version="2", max_batch_size=max_batch_size, max_batch_delay_ms=max_delay_ms
    )
    return [unbatched, batched]


def pinned_ready(url: str, version: str) -> bool:
    import httpx

    try:
        response = httpx.post(
            f"{url}/v2/models/forest/versions/{version}/infer", content=BODY, timeout=5
        )
    except httpx.TransportError:
        return False
    return response.status_code == 200


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench/batching.py needs wrk: apt-get install -y wrk")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    script = work / "infer.lua"
    script.write_text(WRK_SCRIPT)
    specs = forest_specs(work, max_batch_size=args.max_batch_size, max_delay_ms=args.max_delay_ms)
    replica = start_replica(namespace=namespace, redis_url=redis_url, log_dir=work)
    try:
        deploy(redis_url, namespace, specs, routes={"forest": "1"}, warm=(("forest", "2"),))
        for version in ("1", "2"):
            wait_until(
                lambda v=version: pinned_ready(replica.url, v), timeout=60, what="the forest"
            )
        labels = {
            "1": "forest, unbatched",
            "2": f"forest, batched (max {args.max_batch_size} rows, {args.max_delay_ms:g} ms)",
        }
        runs: dict[str, list] = {v: [] for v in labels}
        for _ in range(args.rounds):
            for version, label in labels.items():
                url = f"{replica.url}/v2/models/forest/versions/{version}/infer"
                runs[version].append(
                    run_wrk(
                        label,
                        url,
                        concurrency=args.concurrency,
                        seconds=args.seconds,
                        script=script,
                    )
                )
    finally:
        replica.stop()
        drop_namespace(redis_url, namespace)
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"random forest ({TREES} trees), one 1x4 FP32 row per request; "
        f"wrk at concurrency {args.concurrency}, median of {args.rounds} runs in turns"
    )
    print(f"{'':52} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7}  runs (req/s)")
    medians = {}
    for version, label in labels.items():
        median = medians[version] = median_run(runs[version])
        spread = ", ".join(f"{r.requests_per_second:.0f}" for r in runs[version])
        print(
            f"{label:52} {median.requests_per_second:9.0f} {median.p50_ms:8.2f}"
            f" {median.p99_ms:8.2f} {median.failed:7d}  {spread}"
        )
    unbatched, batched = medians["1"], medians["2"]
    print(
        f"batched / unbatched: {batched.requests_per_second / unbatched.requests_per_second:.2f}x"
        f" the requests per second, p99 {batched.p99_ms:.1f} vs {unbatched.p99_ms:.1f} ms"
    )


if __name__ == "__main__":
    main()
