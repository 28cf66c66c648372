"""`manage.py approve_rollback ID`: approve another user's rollback request; it runs now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from swaps import documents, rollbacks
from swaps.management.base import DomainCommand
from swaps.management.commands.rollback import describe


class Command(DomainCommand):
    help = "Approve rollback request ID (not your own); the route flips at once."
    acts_as_user = True

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("request_id", type=int)

    def run(self, **options: Any) -> tuple[Any, str]:
        request = rollbacks.approve_rollback(
            request_id=options["request_id"], user=options["user"], via=options["via"]
        )
        return documents.rollback_document(request), describe(request)
