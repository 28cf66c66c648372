"""`manage.py republish_fleet`: write routes and versions from the database to Redis."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from swaps import audit, fleet_state
from swaps.engine.results import counted
from swaps.management.base import DomainCommand


class Command(DomainCommand):
    help = (
        "Republish every version, and each served model's route and desired version, from "
        "the database (the source of truth) to the fleet's Redis. Models with a swap under "
        "way keep their route, unless --all."
    )

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--all", action="store_true", help="also reset routes of models mid-swap"
        )

    def run(self, **options: Any) -> tuple[Any, str]:
        snapshot = fleet_state.republish_from_database(keep_running=not options["all"])
        kept = sorted(snapshot.running) if not options["all"] else []
        routes = {m: active for m, (active, _) in snapshot.routes.items() if m not in kept}
        audit.audit(
            actor="cli",
            via=options["via"],
            action=audit.REPUBLISH,
            outcome="completed",
            details={"routes": routes, "kept": kept},
        )
        document = {"versions": len(snapshot.specs), "routes": routes, "kept_running": kept}
        text = (
            f"republished {counted(len(snapshot.specs), 'version')} "
            f"and {counted(len(routes), 'route')}"
        )
        if kept:
            text += f"; kept the routes of {', '.join(kept)} (a swap is under way)"
        return document, text
