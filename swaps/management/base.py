"""What the control plane's management commands share: --json, --user, one-line errors.

A command's `run(**options)` returns a JSON-ready document and the line a person
reads; refusals become one `CommandError` line and exit status 1.
"""

from __future__ import annotations

import json
import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from swaps.engine.errors import SwapError
from swaps.refusals import Refused

NO_USER = (
    "say who is acting: pass --user USERNAME (or set HOTSWAP_USER); every change is "
    "recorded under a user and checked against their permissions"
)
UNKNOWN_USER = "no user named {username!r}"


class DomainCommand(BaseCommand):
    # Commands that change state act as a user, checked like any other.
    acts_as_user = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")
        if self.acts_as_user:
            parser.add_argument(
                "--user",
                default=os.environ.get("HOTSWAP_USER", ""),
                help="who is acting (default: $HOTSWAP_USER)",
            )
        self.add_command_arguments(parser)

    def add_command_arguments(self, parser: CommandParser) -> None:
        pass

    def handle(self, *args: Any, **options: Any) -> None:
        if self.acts_as_user:
            options["user"] = find_user(options["user"])
        try:
            document, text = self.run(**options)
        except (Refused, SwapError) as refusal:
            raise CommandError(refusal.message) from None
        if options["json"]:
            self.stdout.write(json.dumps(document, indent=2, sort_keys=True))
        else:
            self.stdout.write(text)

    def run(self, **options: Any) -> tuple[Any, str]:
        raise NotImplementedError


def find_user(username: str):
    if not username:
        raise CommandError(NO_USER)
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(UNKNOWN_USER.format(username=username)) from None


def parse_json(value: str, *, option: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise CommandError(f"{option} is not valid JSON: {exc}") from None
