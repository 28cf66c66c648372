"""Latency histograms: what a replica counts per version, and how the control plane
reads a window of them across replicas (a rollout's candidate p99 against stable's)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from swaps.engine.inflight import FAILED, LATENCY_BUCKETS_MS, SERVED, LocalInflight
from swaps.engine.latency import BUCKETS, merge, percentile, total, window
from swaps.engine.reports import ReplicaReport


def histogram(*milliseconds: float) -> list[int]:
    """The histogram a replica reports after requests that took these times."""
    inflight = LocalInflight()
    for ms in milliseconds:
        inflight.enter("m", "1")
        inflight.exit("m", "1", SERVED, ms / 1000)
    return inflight.snapshot().latency.get(("m", "1"), [0] * BUCKETS)


def bucket_of(ms: float) -> int:
    return histogram(ms).index(1)


# -- counting ---------------------------------------------------------------------------------


def test_the_buckets_tell_1_ms_from_2_ms_and_50_ms_from_100_ms():
    assert bucket_of(1) != bucket_of(2)
    assert bucket_of(50) != bucket_of(100)


def test_a_time_on_a_bound_is_counted_in_the_bucket_it_bounds():
    assert LATENCY_BUCKETS_MS[bucket_of(1)] == 1
    assert LATENCY_BUCKETS_MS[bucket_of(1.01)] > 1


def test_a_request_slower_than_the_last_bound_is_counted_in_the_last_bucket():
    assert bucket_of(60_000) == BUCKETS - 1 == len(LATENCY_BUCKETS_MS)


def test_each_version_has_its_own_histogram_of_every_timed_request():
    inflight = LocalInflight()
    for version, outcome, seconds in (("1", SERVED, 0.001), ("1", FAILED, 0.002), ("2", SERVED, 1)):
        inflight.enter("m", version)
        inflight.exit("m", version, outcome, seconds)

    latency = inflight.snapshot().latency

    assert set(latency) == {("m", "1"), ("m", "2")}
    assert total(latency["m", "1"]) == 2  # the failed request too
    assert total(latency["m", "2"]) == 1


def test_a_request_ended_without_its_time_is_counted_but_not_in_the_histogram():
    inflight = LocalInflight()
    inflight.enter("m", "1")
    inflight.exit("m", "1")

    counts = inflight.snapshot()

    assert counts.completed == {("m", "1"): 1}
    assert counts.latency == {}


def test_a_snapshot_is_not_changed_by_later_requests():
    inflight = LocalInflight()
    inflight.enter("m", "1")
    inflight.exit("m", "1", SERVED, 0.001)
    before = inflight.snapshot()
    inflight.enter("m", "1")
    inflight.exit("m", "1", SERVED, 0.001)

    assert total(before.latency["m", "1"]) == 1


# -- reading ----------------------------------------------------------------------------------


def test_a_window_holds_the_requests_between_two_reports():
    before = histogram(1, 50)
    after = histogram(1, 50, 2, 2, 100)

    assert window(before, after) == histogram(2, 2, 100)


def test_a_replica_that_restarted_in_between_counts_everything_since_in_its_window():
    before = histogram(1, 1, 1)
    after = histogram(2)  # its 1 ms count went down: a new process

    assert window(before, after) == after


def test_a_replica_without_an_earlier_report_counts_everything_in_its_window():
    assert window(None, histogram(5, 7)) == histogram(5, 7)


def test_merge_sums_the_replicas():
    assert merge([histogram(1, 2), histogram(2, 100)]) == histogram(1, 2, 2, 100)
    assert merge([]) == [0] * BUCKETS


def test_merge_refuses_a_histogram_of_other_buckets():
    with pytest.raises(ValueError, match="buckets"):
        merge([histogram(1), [1, 2, 3]])


def test_no_request_has_no_percentile():
    assert percentile([0] * BUCKETS, 0.99) is None


def test_a_percentile_lies_in_the_bucket_that_holds_it():
    counts = histogram(*[1] * 98, 50, 50)

    assert 0.75 < percentile(counts, 0.5) <= 1
    assert 30 < percentile(counts, 0.99) <= 50


def test_a_percentile_is_interpolated_inside_its_bucket():
    counts = histogram(40, 40, 40, 40)  # all in the bucket (30, 50]

    assert percentile(counts, 0.5) == pytest.approx(40)
    assert percentile(counts, 1) == 50


def test_p99_tells_a_2_ms_candidate_from_a_1_ms_stable_version():
    stable, candidate = histogram(*[1] * 100), histogram(*[2] * 100)

    assert percentile(candidate, 0.99) > percentile(stable, 0.99)


def test_a_percentile_among_the_slowest_requests_reads_as_the_last_bound():
    assert percentile(histogram(1, 60_000), 0.99) == LATENCY_BUCKETS_MS[-1]


def test_a_quantile_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile(histogram(1), 99)


# -- in reports -------------------------------------------------------------------------------


def test_a_report_of_a_replica_that_counts_no_latency_reads_as_none():
    now = datetime.now(UTC).isoformat()
    older = {"replica_id": "r1", "address": "http://r1", "pid": 1, "incarnation": "i"}
    raw = orjson.dumps({**older, "started_at": now, "reported_at": now})

    assert ReplicaReport.from_json(raw).latency == {}
