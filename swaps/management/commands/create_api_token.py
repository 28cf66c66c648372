"""`manage.py create_api_token USER`: make an API token; its secret is shown only now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from swaps import tokens
from swaps.management.base import DomainCommand, find_user


class Command(DomainCommand):
    help = (
        "Make an API token for USER (send it as Authorization: Bearer <token>). Only its "
        "digest is stored: copy the token now."
    )

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="what the token is for")

    def run(self, **options: Any) -> tuple[Any, str]:
        user = find_user(options["username"])
        token, secret = tokens.create_api_token(user=user, name=options["name"], via=options["via"])
        document = {"id": token.pk, "user": user.get_username(), "name": token.name}
        return {**document, "token": secret}, secret
