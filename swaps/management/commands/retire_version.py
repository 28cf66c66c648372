"""`manage.py retire_version MODEL VERSION [--restore]`: take a version out of service."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from swaps import documents, registry
from swaps.management.base import DomainCommand


class Command(DomainCommand):
    help = (
        "Retire VERSION of MODEL: no swap or rollback may target it and no form offers "
        "it; its records and history stay. --restore undoes it. The version serving the "
        "model, or one an operation under way uses, is refused."
    )
    acts_as_user = True

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("version")
        parser.add_argument("--restore", action="store_true", help="undo an earlier retire")

    def run(self, **options: Any) -> tuple[Any, str]:
        version = registry.retire_version(
            model=options["model"],
            version=options["version"],
            user=options["user"],
            via=options["via"],
            restore=options["restore"],
        )
        done = "restored" if version.retired_at is None else "retired"
        return documents.version_document(version), f"{version} {done}"
