"""`manage.py swap MODEL FROM TO`: start a swap (FROM "-" for a model's first deploy)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from swaps import documents, swapping
from swaps.management.base import DomainCommand
from swaps.models import Swap

STILL_RUNNING = "swap {swap_id} is still {state} after {seconds:g} s (its job runs on)"


class Command(DomainCommand):
    help = "Start a swap of MODEL from version FROM (its active one) to TO; a job runs it."
    acts_as_user = True

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("from_version", help='the active version, or "-" to deploy')
        parser.add_argument("to_version")
        parser.add_argument(
            "--wait",
            type=float,
            default=0,
            metavar="SECONDS",
            help="wait up to this long for the swap to finish; exit 1 if it failed",
        )
        parser.add_argument(
            "--force",
            metavar="REASON",
            help="swap even to a target that would break the active version's clients "
            "(different inputs or outputs), saying why (audited)",
        )

    def run(self, **options: Any) -> tuple[Any, str]:
        swap = swapping.start_swap(
            model=options["model"],
            from_version=None if options["from_version"] == "-" else options["from_version"],
            to_version=options["to_version"],
            user=options["user"],
            via=options["via"],
            force=options["force"],
        )
        if options["wait"] > 0:
            swap = _wait(swap, options["wait"])
        text = f"swap {swap.pk} of {swap.served_model.name}: {swap.state}"
        if swap.message:
            text += f" ({swap.message})"
        return documents.swap_document(swap), text


def _wait(swap: Swap, seconds: float) -> Swap:
    deadline = time.monotonic() + seconds
    while swap.is_running:
        if time.monotonic() > deadline:
            raise CommandError(
                STILL_RUNNING.format(swap_id=swap.pk, state=swap.state, seconds=seconds)
            )
        time.sleep(0.2)
        swap.refresh_from_db()
    if swap.state == Swap.State.FAILED:
        raise CommandError(f"swap {swap.pk} failed: {swap.message}")
    return swap
