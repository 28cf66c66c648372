"""`manage.py seed_demo`: the demo's models, versions and users. Safe to run again."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import CommandParser
from django.db import transaction

from swaps import audit, fleet_state, lifecycle, registry
from swaps.demo_models import IRIS_MODEL_ID, build_demo_models
from swaps.management.base import DomainCommand
from swaps.models import ModelVersion, ServedModel
from swaps.refusals import Refused

# Who does what in the demo: the groups' permissions, and the users in them.
# Both groups may read the records in the admin (read-only there: changes go through
# the console, the API and the CLI, which audit them).
READ_RECORDS = [
    f"view_{model}"
    for model in ("servedmodel", "modelversion", "swap", "swaptransition", "rollbackrequest")
] + ["view_auditentry"]
GROUPS = {
    "operators": [
        "start_swap",
        "request_rollback",
        "register_version",
        "register_code",
        *READ_RECORDS,
    ],
    "approvers": ["approve_rollback", "request_rollback", *READ_RECORDS],
}
USERS = {"alice": "operators", "bob": "approvers", "mallory": None}
FIRST_VERSION = "1"
APPROVAL_KEPT = (
    "{model} {state}: seed_demo sets that only when it first serves a model; since then "
    "only a user with the swaps.set_rollback_approval permission changes it (the admin's "
    "approval actions)"
)


class Command(DomainCommand):
    help = (
        "Build the iris demo versions into $HOTSWAP_RUN_DIR/models and register them "
        "(iris 1 active, rollbacks approval-gated), and make the users alice (operator), "
        "bob (approver) and mallory (no rights). Passwords come from "
        "HOTSWAP_DEMO_PASSWORD, or are made up and printed once."
    )

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-approval",
            action="store_true",
            help="let rollbacks of iris run without a second user's approval (only when "
            "seed_demo first serves iris: after that it takes set_rollback_approval)",
        )

    def run(self, **options: Any) -> tuple[Any, str]:
        lines: list[str] = []
        groups = {name: _group(name, codenames) for name, codenames in GROUPS.items()}
        passwords = {}
        for username, group in USERS.items():
            password = _user(username, groups.get(group))
            if password:
                passwords[username] = password
                lines.append(f"user {username} created, password: {password}")
        operator = get_user_model().objects.get(username="alice")
        registered = []
        for spec in build_demo_models(Path(settings.HOTSWAP_RUN_DIR) / "models"):
            if ModelVersion.objects.filter(
                served_model__name=spec.model_id, version=spec.version
            ).exists():
                continue
            registry.register_spec(spec=spec, user=operator, via=options["via"])
            registered.append(f"{spec.model_id} {spec.version}")
        if registered:
            lines.append(f"registered {', '.join(registered)}")
        iris = ServedModel.objects.get(name=IRIS_MODEL_ID)
        if iris.active_version is None:
            # The first route comes from the database, like any republish: no replica
            # needs to be running yet. It commits with the approval gate, so a seeding
            # cut short never leaves iris serving with its gate open for good.
            with transaction.atomic():
                _seed_approval(iris, required=not options["no_approval"], via=options["via"])
                lifecycle.mark_active(served=iris, version=FIRST_VERSION)
                audit.audit(
                    actor="seed_demo",
                    via=options["via"],
                    action="seed_demo",
                    outcome="completed",
                    model=iris.name,
                    to_version=FIRST_VERSION,
                )
            lines.append(f"{iris.name} serves version {FIRST_VERSION}")
        elif iris.rollback_requires_approval == options["no_approval"]:
            lines.append(_approval_kept(iris))
        lines.append(_republish())
        document = {
            "users": {u: (g or "no rights") for u, g in USERS.items()},
            "passwords": passwords,
            "registered": registered,
            "active": {iris.name: iris.active_version.version},
            "rollback_requires_approval": iris.rollback_requires_approval,
        }
        return document, "\n".join(lines)


def _seed_approval(served: ServedModel, *, required: bool, via: str) -> None:
    """Set the approval gate of a model seed_demo is putting into service, audited.

    Seeded as the system, not through `registry.set_rollback_approval`: no demo user
    holds set_rollback_approval (the gate is not for those it holds back to open), and
    after this first seeding only a user who holds it changes the gate, not a rerun.
    """
    ServedModel.objects.filter(pk=served.pk).update(rollback_requires_approval=required)
    audit.audit(
        actor="seed_demo",
        via=via,
        action="set_rollback_approval",
        outcome="accepted",
        model=served.name,
        details={"required": required},
    )
    served.rollback_requires_approval = required


def _approval_kept(served: ServedModel) -> str:
    state = (
        "still requires approval for rollbacks"
        if served.rollback_requires_approval
        else "still rolls back without approval"
    )
    return APPROVAL_KEPT.format(model=served.name, state=state)


def _group(name: str, codenames: list[str]) -> Group:
    group, _ = Group.objects.get_or_create(name=name)
    group.permissions.set(
        Permission.objects.filter(content_type__app_label="swaps", codename__in=codenames)
    )
    return group


def _user(username: str, group: Group | None) -> str | None:
    """Make the user if missing; return its password only when it was just made."""
    users = get_user_model().objects
    if users.filter(username=username).exists():
        return None
    password = os.environ.get("HOTSWAP_DEMO_PASSWORD") or secrets.token_urlsafe(9)
    # A user in a group may open the admin (to read the records); mallory may not.
    user = users.create_user(username=username, password=password, is_staff=group is not None)
    if group is not None:
        user.groups.add(group)
    return password


def _republish() -> str:
    try:
        snapshot = fleet_state.republish_from_database()
    except Refused as exc:
        return f"the fleet was not told yet ({exc.message}); workers and replicas will be"
    return f"published {len(snapshot.specs)} versions and {len(snapshot.routes)} routes"
