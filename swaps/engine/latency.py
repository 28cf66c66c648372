"""Reading the latency histograms replicas report: a window between two reports, a
fleet's sum, and percentiles.

A replica's histogram (`ReplicaReport.latency`, counted by `LocalInflight.exit`) is
cumulative since it started, one count per bucket of `LATENCY_BUCKETS_MS` and a last
one for slower requests. So "p99 over the last minute" is: the window of each replica
(its report now minus its report a minute ago), merged over replicas, then read.
Pure functions on lists: the control plane needs no Prometheus for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from .inflight import LATENCY_BUCKETS_MS

BUCKETS = len(LATENCY_BUCKETS_MS) + 1


def window(before: list[int] | None, after: list[int]) -> list[int]:
    """The requests counted between two reports of one replica.

    A count going down (or a histogram of another shape) means the replica restarted in
    between, so everything it counted since is in `after`. A restart that counted more
    than before in every bucket cannot be told from the counts: a caller that sees the
    report's `started_at` change passes `before=None`.
    """
    if before is None or len(before) != len(after):
        return list(after)
    if any(then > now for then, now in zip(before, after, strict=True)):
        return list(after)
    return [now - then for then, now in zip(before, after, strict=True)]


def merge(histograms: Iterable[list[int]]) -> list[int]:
    """The sum of several replicas' histograms (all counted with `LATENCY_BUCKETS_MS`)."""
    merged = [0] * BUCKETS
    for histogram in histograms:
        if len(histogram) != BUCKETS:
            raise ValueError(f"a histogram of {len(histogram)} buckets, not {BUCKETS}")
        for i, count in enumerate(histogram):
            merged[i] += count
    return merged


def total(counts: list[int]) -> int:
    """How many requests the histogram counts."""
    return sum(counts)


def percentile(counts: list[int], q: float) -> float | None:
    """The `q`-th quantile (0 <= q <= 1: 0.99 for p99) in milliseconds, or None if the
    histogram counts no request.

    Interpolated linearly inside the bucket that holds it, as Prometheus'
    `histogram_quantile` does, so it is never past that bucket's upper bound. Requests
    slower than the last bound have no upper bound: a quantile among them reads as the
    last bound, i.e. "at least 10 s".
    """
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is between 0 and 1, not {q}")
    rank = q * sum(counts)
    below = 0
    for i, count in enumerate(counts):
        if count and below + count >= rank:
            if i >= len(LATENCY_BUCKETS_MS):
                return float(LATENCY_BUCKETS_MS[-1])
            lower = LATENCY_BUCKETS_MS[i - 1] if i else 0.0
            upper = LATENCY_BUCKETS_MS[i]
            return lower + (upper - lower) * (rank - below) / count
        below += count
    return None
