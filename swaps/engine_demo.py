"""The engine end to end in a terminal: real iris models, simulated traffic, swaps.

Serves iris 1 to a stream of requests, swaps to 2, is refused a swap to the broken 3,
rolls back to 1, and prints every state transition and result on the way; at the end it
counts the requests each version answered and any that failed (there should be none).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from collections import Counter
from pathlib import Path

import numpy as np

from .demo_models import IRIS_MODEL_ID, build_demo_models
from .engine.errors import SwapError
from .engine.hotswapper import SwapPolicy
from .engine.local import local_stack
from .engine.results import SwapStatus


def _print_transition(status: SwapStatus) -> None:
    pending = f"  pending={status.pending_requests}" if status.state.running else ""
    print(f"  [{status.operation:8}] {status.state.value:9}{pending}  {status.message}")


class Traffic:
    """A few client threads sending iris rows as fast as the model answers."""

    def __init__(self, dispatcher, *, clients: int = 4) -> None:
        self._dispatcher = dispatcher
        self._stop = threading.Event()
        self.answered: Counter[str] = Counter()
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        rows = {"input-0": np.array([[5.9, 3.0, 5.1, 1.8]], dtype=np.float32)}
        while not self._stop.is_set():
            try:
                version = self._dispatcher.infer(IRIS_MODEL_ID, rows).version
            except Exception as exc:  # a demo counts failures rather than dying on one
                with self._lock:
                    self.failed.append(f"{type(exc).__name__}: {exc}")
            else:
                with self._lock:
                    self.answered[version] += 1

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


async def run(models_dir: Path, *, pause: float) -> int:
    print(f"building the demo models into {models_dir} ...")
    specs = build_demo_models(models_dir)
    stack = local_stack(
        specs, policy=SwapPolicy(drain_timeout=10, keep_warm=60), on_change=_print_transition
    )
    swapper = stack.swapper
    print("deploying iris 1 (logistic regression, scikit-learn)")
    await swapper.deploy(IRIS_MODEL_ID, "1")
    with Traffic(stack.dispatcher) as traffic:
        await asyncio.sleep(pause)
        print("\nswap iris 1 -> 2 (random forest, ONNX Runtime), under traffic")
        print(f"  -> {(await swapper.swap_version(IRIS_MODEL_ID, '1', '2')).message}")
        await asyncio.sleep(pause)
        print("\nswap iris 2 -> 3 (deliberately broken: wrong output shape)")
        try:
            await swapper.swap_version(IRIS_MODEL_ID, "2", "3")
        except SwapError as refused:
            print(f"  -> refused: {refused.message}")
        await asyncio.sleep(pause)
        print("\nrollback iris to 1 (kept warm since the swap)")
        rollback = await swapper.rollback_version(IRIS_MODEL_ID, "1")
        print(f"  -> {rollback.message} (route flipped in {rollback.flip_seconds * 1000:.2f} ms)")
        await asyncio.sleep(pause)
    status = await swapper.get_swap_status(IRIS_MODEL_ID)
    print(f"\nnow serving iris {status.current_version}; state {status.state.value}")
    answered = ", ".join(f"v{v}: {n}" for v, n in sorted(traffic.answered.items()))
    print(f"requests answered: {answered}; failed: {len(traffic.failed)}")
    for failure in traffic.failed[:5]:
        print(f"  failed: {failure}")
    return 1 if traffic.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=Path("run/models"))
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of traffic per step")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.models_dir, pause=args.pause))


if __name__ == "__main__":
    raise SystemExit(main())
