"""`manage.py verify_audit`: recompute the audit log's hash chain, exit 1 if it is broken."""

from __future__ import annotations

import re
from typing import Any

from django.core.management.base import CommandError, CommandParser

from swaps import audit
from swaps.management.base import DomainCommand

NOT_A_HASH = "--head must be the 64 hex digits an earlier verify_audit printed, not {head!r}"


class Command(DomainCommand):
    help = (
        "Recompute the hash chain of the audit log: print 'N entries, chain intact' "
        "with the head hash (record it elsewhere, and pass it as --head later), or name "
        "the first entry that was changed, deleted or put in, and exit 1."
    )

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--head",
            default="",
            help="a head hash an earlier run printed: the chain must still pass through it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        super().handle(*args, **options)
        if not self.report.intact:
            # --json printed the document; the exit status still tells cron or CI.
            raise CommandError(self.report.text)

    def run(self, **options: Any) -> tuple[Any, str]:
        head = options["head"].strip().lower()
        if head and not re.fullmatch(r"[0-9a-f]{64}", head):
            raise CommandError(NOT_A_HASH.format(head=options["head"][:100]))
        self.report = audit.verify_chain(head=head)
        if not self.report.intact and not options["json"]:
            raise CommandError(self.report.text)  # one line on stderr, like a refusal
        return self.report.as_dict(), self.report.text
