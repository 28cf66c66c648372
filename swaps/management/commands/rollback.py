"""`manage.py rollback MODEL TARGET --reason WHY`: roll back now, or ask for approval."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from swaps import documents, rollbacks
from swaps.management.base import DomainCommand


class Command(DomainCommand):
    help = (
        "Roll MODEL back to TARGET, a version it served before: the route flips at once, "
        "or, where the model requires approval, the request waits for a second user."
    )
    acts_as_user = True

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("target_version")
        parser.add_argument("--reason", required=True, help="why (goes into the audit log)")

    def run(self, **options: Any) -> tuple[Any, str]:
        request = rollbacks.request_rollback(
            model=options["model"],
            target_version=options["target_version"],
            reason=options["reason"],
            user=options["user"],
            via=options["via"],
        )
        return documents.rollback_document(request), describe(request)


def describe(request: Any) -> str:
    if request.swap is None:
        return (
            f"rollback request {request.pk} of {request.served_model.name} to "
            f"{request.target_version.version}: {request.get_state_display()}"
        )
    swap = request.swap
    return (
        f"rollback request {request.pk}: swap {swap.pk} of {request.served_model.name} to "
        f"{request.target_version.version} is {swap.state} ({swap.message})"
    )
