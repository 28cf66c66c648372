"""Adaptive batching: requests for one version merged along dim 0 into one `predict`.

A version that declares `max_batch_size` > 1 gets a `Batcher` on each replica. A request
is first routed and counted in flight on its own (`Dispatcher.begin`), so a drain still
waits for each; then its rows join the open batch of that version (one per loaded
model: a batch never mixes versions). The batch runs when it holds `max_batch_size` rows
or `max_batch_delay_ms` after its first request, whichever comes first; every request
gets its own rows of every output back. A model failure fails that batch's requests,
each with the error; the others never see it.

Only requests whose inputs stack join a batch: the same input names, datatypes and
sizes past the first dimension, and one row count shared by every input; two requests
that differ go to different batches. A request of `max_batch_size` rows or more runs
alone.

Everything here runs on the event loop (no lock): the model itself runs wherever the
given `run` puts it (the replica's model threads).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

Tensors = Mapping[str, np.ndarray]
# The model on a batch: its outputs, and its own time in seconds.
Run = Callable[[Tensors], Awaitable[tuple[dict[str, np.ndarray], float]]]
Key = tuple[tuple[str, str, tuple[int, ...]], ...]

UNSPLITTABLE = "output {name!r} has {got} rows for a batch of {rows}: it cannot be split by rows"


class UnsplittableOutput(Exception):
    pass


def stacking_key(inputs: Tensors) -> tuple[Key, int] | None:
    """What requests must share to stack with this one, and its rows; None if it cannot."""
    rows = None
    key = []
    for name, array in inputs.items():
        if array.ndim == 0 or (rows is not None and array.shape[0] != rows):
            return None
        rows = array.shape[0]
        key.append((name, array.dtype.str, array.shape[1:]))
    return (tuple(key), rows) if rows else None


def merged(parts: list[Tensors]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def split(outputs: Mapping[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
    """Each request's rows of every output, in order; UnsplittableOutput if they are not."""
    total = sum(rows)
    arrays = {name: np.asarray(value) for name, value in outputs.items()}
    for name, array in arrays.items():
        got = array.shape[0] if array.ndim else 0
        if got != total:
            raise UnsplittableOutput(UNSPLITTABLE.format(name=name, got=got, rows=total))
    pieces, start = [], 0
    for count in rows:
        pieces.append({name: array[start : start + count] for name, array in arrays.items()})
        start += count
    return pieces


@dataclass
class _Batch:
    parts: list[Tensors] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    futures: list[asyncio.Future] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None

    @property
    def size(self) -> int:
        return sum(self.rows)


class Batcher:
    def __init__(self, run: Run, *, max_batch_size: int, max_delay_seconds: float) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_delay_seconds = max_delay_seconds
        self._open: dict[Key, _Batch] = {}
        self._running: set[asyncio.Task] = set()

    async def predict(self, inputs: Tensors) -> tuple[dict[str, np.ndarray], float]:
        """This request's outputs (its own rows) and the predict time of its batch."""
        stacking = stacking_key(inputs)
        if stacking is None or stacking[1] >= self.max_batch_size:
            return await self._run(inputs)
        key, rows = stacking
        batch = self._open.get(key)
        if batch is not None and batch.size + rows > self.max_batch_size:
            self._flush(key)
            batch = None
        if batch is None:
            batch = self._open[key] = _Batch()
            loop = asyncio.get_running_loop()
            batch.timer = loop.call_later(self.max_delay_seconds, self._flush, key, batch)
        future = asyncio.get_running_loop().create_future()
        batch.parts.append(inputs)
        batch.rows.append(rows)
        batch.futures.append(future)
        if batch.size >= self.max_batch_size:
            self._flush(key)
        return await future

    def _flush(self, key: Key, batch: _Batch | None = None) -> None:
        if batch is not None and self._open.get(key) is not batch:
            return  # the timer of a batch that already ran
        batch = self._open.pop(key)
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.ensure_future(self._answer(batch))
        self._running.add(task)  # held until it ends: the loop keeps only weak references
        task.add_done_callback(self._running.discard)

    async def _answer(self, batch: _Batch) -> None:
        try:
            inputs = batch.parts[0] if len(batch.parts) == 1 else merged(batch.parts)
            outputs, seconds = await self._run(inputs)
            pieces = split(outputs, batch.rows)
        except Exception as exc:
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, piece in zip(batch.futures, pieces, strict=True):
            if not future.done():  # a request whose client went away is cancelled
                future.set_result((piece, seconds))


def batched_sample_failure(
    predict: Callable[[Tensors], Mapping[str, np.ndarray]], sample: Tensors
) -> str | None:
    """Why the model's answers cannot be split by request, or None: the sample stacked
    twice must give twice the sample's rows in every output."""
    rows = len(next(iter(sample.values())))
    try:
        split(predict(merged([sample, sample])), [rows, rows])
    except Exception as exc:
        return f"the batched sample failed: {exc}"
    return None
