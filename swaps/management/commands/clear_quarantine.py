"""`manage.py clear_quarantine MODEL VERSION`: let the fleet try a quarantined version again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from swaps import documents, quarantine
from swaps.management.base import DomainCommand


class Command(DomainCommand):
    help = (
        "Clear the quarantine of VERSION of MODEL (its trial load crashed, hung or broke "
        "its memory limit on a replica): the next swap to it tries it again, in a trial "
        "first as always. Fix the artifact or its limit before you do."
    )
    acts_as_user = True

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("version")

    def run(self, **options: Any) -> tuple[Any, str]:
        version = quarantine.clear(
            model=options["model"],
            version=options["version"],
            user=options["user"],
            via=options["via"],
        )
        return documents.version_document(version), f"{version}: quarantine cleared"
