"""`manage.py sweep_swaps`: recover swaps whose runner died (workers do this on their own)."""

from __future__ import annotations

from typing import Any

from swaps import recovery
from swaps.management.base import DomainCommand


class Command(DomainCommand):
    help = (
        "Find swaps and rollbacks whose runner died and queue their recovery (a worker "
        "finishes or fails each); republish the fleet state if Redis came back empty. "
        "Every RQ worker does this when it starts and every HOTSWAP_SWEEP_INTERVAL."
    )

    def run(self, **options: Any) -> tuple[Any, str]:
        report = recovery.sweep()
        document = {
            "republished": report.republished,
            "recovering": report.recovering,
            "fleet_error": report.fleet_error,
        }
        parts = [f"queued recovery of {len(report.recovering)} swaps"]
        if report.republished:
            parts.append("republished the fleet state (Redis was empty)")
        if report.fleet_error:
            parts.append(f"fleet unreachable: {report.fleet_error}")
        return document, "; ".join(parts)
