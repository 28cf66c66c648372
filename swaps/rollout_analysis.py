"""A rollout's analysis: the candidate judged against the stable version on live traffic.

Figures come from what the replicas report (engine/reports.py), nothing else: each
replica's cumulative counts and latency histogram per version, taken at the start of a
step and again at every look, so the window is the step so far. A replica that restarted
in between (its counts went down) counts from zero; one that joined counts whole.
Model failures (5xx) are the errors; a client's bad request (4xx) is not the version's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from swaps.engine import latency
from swaps.engine.reports import ReplicaReport

# Name -> (what it says, the check of a value): what a rollout may declare.
THRESHOLDS: dict[str, str] = {
    "min_requests": "requests the candidate answers in a step before it is judged (>= 1)",
    "max_error_rate": "the candidate's largest share of failed requests, 0-1 (0.01 is 1 %)",
    "max_p99_ratio": "the candidate's p99 latency over the stable version's, at most (> 0)",
    "max_p99_ms": "the candidate's p99 latency in milliseconds, at most (> 0)",
}
# What a rollout that declares no analysis is judged by: a candidate failing more than
# 1 % of 100 requests is aborted, as nobody wants to find out later.
DEFAULTS: dict[str, float] = {"min_requests": 100, "max_error_rate": 0.01}
NOT_A_THRESHOLD = "unknown threshold {name!r}: use {known}"
BAD_VALUE = "{name} must be {rule}"
RULES = {
    "min_requests": ("a whole number of at least 1", lambda v: isinstance(v, int) and v >= 1),
    "max_error_rate": ("a number from 0 to 1", lambda v: _number(v) and 0 <= v <= 1),
    "max_p99_ratio": ("a number over 0", lambda v: _number(v) and v > 0),
    "max_p99_ms": ("a number over 0", lambda v: _number(v) and v > 0),
}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def threshold_problems(analysis: Any) -> dict[str, str]:
    """What is wrong with a declared analysis, by threshold name (empty: nothing)."""
    if not isinstance(analysis, dict):
        return {"analysis": "must be an object of thresholds: " + ", ".join(THRESHOLDS)}
    problems = {}
    for name, value in analysis.items():
        if name not in RULES:
            problems[name] = NOT_A_THRESHOLD.format(name=name, known=", ".join(THRESHOLDS))
        elif isinstance(value, bool) or not RULES[name][1](value):
            problems[name] = BAD_VALUE.format(name=name, rule=RULES[name][0])
    return problems


@dataclass(frozen=True)
class Figures:
    """One version's traffic over the window, summed over the live replicas."""

    requests: int = 0
    failures: int = 0
    client_errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate}


@dataclass(frozen=True)
class Check:
    name: str
    limit: float
    measured: float | None
    passed: bool | None  # None: not judged yet (too few requests)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    stable: Figures
    candidate: Figures
    checks: list[Check] = field(default_factory=list)
    min_requests: int = 0

    @property
    def judged(self) -> bool:
        return self.candidate.requests >= self.min_requests

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.passed is False]

    def as_dict(self) -> dict[str, Any]:
        return {
            "stable": self.stable.as_dict(),
            "candidate": self.candidate.as_dict(),
            "checks": [check.as_dict() for check in self.checks],
            "min_requests": self.min_requests,
            "judged": self.judged,
        }

    def summary(self, stable: str, candidate: str) -> str:
        """The figures in words, e.g. for a transition: what was measured on what."""
        return (
            f"version {candidate}: {_said(self.candidate)}; version {stable}: {_said(self.stable)}"
        )

    def failure(self, stable: str, candidate: str) -> str:
        said = "; ".join(_failed(check) for check in self.failed)
        return f"analysis failed: {said} ({self.summary(stable, candidate)})"


def _said(figures: Figures) -> str:
    text = f"{figures.requests} requests, {figures.failures} failed ({figures.error_rate:.1%})"
    if figures.p99_ms is not None:
        text += f", p50 {figures.p50_ms:.1f} ms, p99 {figures.p99_ms:.1f} ms"
    return text


def _failed(check: Check) -> str:
    if check.name == "max_error_rate":
        return f"error rate {check.measured:.1%} over the {check.limit:.1%} allowed"
    if check.name == "max_p99_ratio":
        return f"p99 {check.measured:.2f}x the stable version's, over the {check.limit:g}x allowed"
    return f"p99 {check.measured:.1f} ms over the {check.limit:g} ms allowed"


Baseline = dict[str, ReplicaReport]  # replica id -> its report when the window began


def baseline(reports: Iterable[ReplicaReport]) -> Baseline:
    return {report.replica_id: report for report in reports}


def figures(
    before: Mapping[str, ReplicaReport], now: Iterable[ReplicaReport], model: str, version: str
) -> Figures:
    requests = failures = client_errors = 0
    histograms = []
    for report in now:
        start = before.get(report.replica_id)
        counts = [
            report.count(table, model, version)
            for table in ("completed", "model_failures", "client_errors")
        ]
        then = (
            [
                start.count(t, model, version)
                for t in ("completed", "model_failures", "client_errors")
            ]
            if start
            else [0, 0, 0]
        )
        restarted = (
            start is None
            or start.pid != report.pid
            or any(c < t for c, t in zip(counts, then, strict=True))
        )
        if restarted:
            then = [0, 0, 0]
        requests += counts[0] - then[0]
        failures += counts[1] - then[1]
        client_errors += counts[2] - then[2]
        after = report.latency.get(model, {}).get(version)
        if after is not None:
            earlier = None if restarted else start.latency.get(model, {}).get(version)
            histograms.append(latency.window(earlier, after))
    merged = latency.merge(histograms) if histograms else None
    return Figures(
        requests=requests,
        failures=failures,
        client_errors=client_errors,
        p50_ms=latency.percentile(merged, 0.5) if merged else None,
        p99_ms=latency.percentile(merged, 0.99) if merged else None,
    )


def judge(
    thresholds: Mapping[str, float],
    before: Mapping[str, ReplicaReport],
    now: list[ReplicaReport],
    *,
    model: str,
    stable: str,
    candidate: str,
) -> Verdict:
    """The candidate's and the stable version's figures since `before`, and each check."""
    ours = figures(before, now, model, candidate)
    theirs = figures(before, now, model, stable)
    least = int(thresholds.get("min_requests", 1))
    judged = ours.requests >= least
    checks = []
    if "max_error_rate" in thresholds:
        limit = thresholds["max_error_rate"]
        checks.append(
            Check(
                "max_error_rate",
                limit,
                ours.error_rate,
                ours.error_rate <= limit if judged else None,
            )
        )
    if "max_p99_ms" in thresholds:
        limit = thresholds["max_p99_ms"]
        measured = ours.p99_ms
        passed = None if not judged or measured is None else measured <= limit
        checks.append(Check("max_p99_ms", limit, measured, passed))
    if "max_p99_ratio" in thresholds:
        limit = thresholds["max_p99_ratio"]
        ratio = None
        if ours.p99_ms is not None and theirs.p99_ms and theirs.requests >= least:
            ratio = ours.p99_ms / theirs.p99_ms
        passed = None if not judged or ratio is None else ratio <= limit
        checks.append(Check("max_p99_ratio", limit, ratio, passed))
    return Verdict(stable=theirs, candidate=ours, checks=checks, min_requests=least)
