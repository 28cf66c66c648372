"""What the control plane's management commands share: --json, --user, one-line errors.

A command's `run(**options)` returns a JSON-ready document and the line a person
reads; refusals become one `CommandError` line and exit status 1. `options["via"]` is
what the command's audit entries give as their channel: `cli` and who ran it.
"""

from __future__ import annotations

import json
import os
import pwd
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from swaps.refusals import Refused

NO_USER = (
    "say who is acting: pass --user USERNAME (or set HOTSWAP_USER); every change is "
    "recorded under a user and checked against their permissions"
)
UNKNOWN_USER = "no user named {username!r}"
# The longest user name Linux allows: SUDO_USER is the caller's to set, and a via this
# bounds (90 characters at most) is one the audit log's column can be sized for.
OS_NAME_MAX = 32


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
        options["via"] = cli_via()
        try:
            document, text = self.run(**options)
        except Refused as refusal:
            raise CommandError(refusal.message) from None
        if options["json"]:
            self.stdout.write(json.dumps(document, indent=2, sort_keys=True))
        else:
            self.stdout.write(text)

    def run(self, **options: Any) -> tuple[Any, str]:
        raise NotImplementedError


def cli_via() -> str:
    """`cli (os user alice)`, or `cli (os user root, sudo from alice)`: who ran it.

    --user names whose permissions a command acts with, and anyone with a shell may
    name anyone (containers exec as one account, so it cannot be the login). The
    account that ran the process is what ties an entry to a person, so it is taken
    from the real uid: $USER and $LOGNAME, which `getpass.getuser()` reads first, are
    set by the caller. SUDO_USER is only sudo's word (or the caller's) for who became
    this account, so it is recorded beside the account, never instead of it.
    """
    uid = os.getuid()
    try:
        account = pwd.getpwuid(uid).pw_name
    except KeyError:  # a container's arbitrary uid with no passwd entry
        account = f"uid {uid}"
    account = account[:OS_NAME_MAX]
    sudo_from = os.environ.get("SUDO_USER", "")[:OS_NAME_MAX]
    if sudo_from:
        return f"cli (os user {account}, sudo from {sudo_from})"
    return f"cli (os user {account})"


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
