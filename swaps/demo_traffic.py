"""A gentle stream of V2 requests to the demo's replicas, so the console has something to show.

    python -m swaps.demo_traffic --rate 4 http://127.0.0.1:8001 http://127.0.0.1:8002

Requests arrive at random (a Poisson stream averaging `--rate` per second), each to a
replica picked at random, each with one to three iris flowers jittered around real
ones. It only reports trouble: one line when a replica stops answering, one when it
answers again. SIGTERM or SIGINT ends it with status 0.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence

from .demo_models import IRIS_MODEL_ID

# One flower of each species (sepal length, sepal width, petal length, petal width).
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.7, 3.0, 5.2, 2.3]]


def request_body(rng: random.Random) -> bytes:
    rows = [
        [round(max(0.1, x + rng.gauss(0, 0.2)), 2) for x in rng.choice(FLOWERS)]
        for _ in range(rng.randint(1, 3))
    ]
    document = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), 4],
                "datatype": "FP32",
                "data": [x for row in rows for x in row],
            }
        ]
    }
    return json.dumps(document).encode()


def send(url: str, body: bytes, *, timeout: float = 5.0) -> str | None:
    """POST one inference; the problem as text, or None when it was answered."""
    request = urllib.request.Request(
        f"{url}/v2/models/{IRIS_MODEL_ID}/infer",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
    return None


def run(
    urls: Sequence[str], *, rate: float, stop: threading.Event, seed: int | None = None
) -> None:
    rng = random.Random(seed)
    failing: set[str] = set()
    while not stop.wait(rng.expovariate(rate)):
        url = rng.choice(urls)
        problem = send(url, request_body(rng))
        if problem and url not in failing:
            failing.add(url)
            print(f"demo traffic: {url} failed: {problem}", file=sys.stderr, flush=True)
        elif problem is None and url in failing:
            failing.discard(url)
            print(f"demo traffic: {url} answers again", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swaps.demo_traffic", description=__doc__)
    parser.add_argument("urls", nargs="+", help="replica base URLs, e.g. http://127.0.0.1:8001")
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second (mean)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be more than 0")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    run(args.urls, rate=args.rate, stop=stop, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
