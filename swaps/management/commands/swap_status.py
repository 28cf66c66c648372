"""`manage.py swap_status MODEL`: the engine's live SwapStatus of a model."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from swaps import swapping
from swaps.management.base import DomainCommand


class Command(DomainCommand):
    help = "Show MODEL's swap status now: state, versions, requests pending."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")

    def run(self, **options: Any) -> tuple[Any, str]:
        status = swapping.live_status(model=options["model"])
        text = f"{status.model_id}: {status.state.value}, serving {status.current_version or '-'}"
        if status.target_version and status.state.running:
            text += f", moving to {status.target_version}"
        text += f", {status.pending_requests} requests pending"
        if status.message:
            text += f" ({status.message})"
        return status.as_dict(), text
