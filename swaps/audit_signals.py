"""Audit entries for changes made outside the domain functions: the Django admin's own
records (users, groups, permissions, models, versions), and sign-ins, failed or not.

Connected in `SwapsConfig.ready()`. A sign-in is audited when it came over HTTP: the
test client's `force_login` and any in-process `login()` build a request that never
arrived (no method), and are not someone signing in from somewhere.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.http import HttpRequest

from swaps import audit
from swaps.models import AuditEntry, ModelVersion, ServedModel

ADMIN_ACTIONS = {
    ADDITION: audit.ADMIN_ADD,
    CHANGE: audit.ADMIN_CHANGE,
    DELETION: audit.ADMIN_DELETE,
}
# A failed sign-in's username is whatever was typed: no longer than any real one.
USERNAME_KEPT = 150


@receiver(post_save, sender=LogEntry, dispatch_uid="swaps.audit_admin_log_entry")
def audit_admin_log_entry(sender: Any, instance: LogEntry, created: bool, **kwargs: Any) -> None:
    """Django admin wrote a LogEntry: the same change, in the audit log.

    Runs inside the admin view's transaction, so the change and its entry commit
    together. The admin's "delete selected" of several objects writes its LogEntries
    with bulk_create, which sends no post_save: those deletions are not seen here.
    """
    if not created or kwargs.get("raw"):
        return
    content_type = instance.content_type
    audit.audit(
        actor=instance.user,
        via="admin",
        action=ADMIN_ACTIONS[instance.action_flag],
        outcome=AuditEntry.Outcome.ACCEPTED,
        **_about(instance),
        details={
            "object": f"{content_type.app_label}.{content_type.model}" if content_type else "",
            "object_id": instance.object_id or "",
            "object_repr": instance.object_repr,
            "change": instance.get_change_message(),
        },
    )


def _about(entry: LogEntry) -> dict[str, str]:
    """The model (and version) an admin change was to, so the model's page lists it."""
    model_class = entry.content_type.model_class() if entry.content_type else None
    if model_class is ServedModel:
        name = ServedModel.objects.filter(pk=entry.object_id).values_list("name", flat=True)
        return {"model": name.first() or ""}
    if model_class is ModelVersion:
        found = ModelVersion.objects.filter(pk=entry.object_id).values_list(
            "served_model__name", "version"
        )
        model, version = found.first() or ("", "")
        return {"model": model, "to_version": version}
    return {}


@receiver(user_logged_in, dispatch_uid="swaps.audit_sign_in")
def audit_sign_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if not _over_http(request):
        return
    audit.audit(
        actor=user,
        via="console",
        action=audit.SIGN_IN,
        outcome=AuditEntry.Outcome.ACCEPTED,
        details=_where(request),
    )


@receiver(user_login_failed, dispatch_uid="swaps.audit_failed_sign_in")
def audit_failed_sign_in(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    if not _over_http(request):
        return
    # Django has replaced the password (and anything like one) with stars by now.
    username = credentials.get(get_user_model().USERNAME_FIELD, "")
    audit.audit(
        actor=None,
        via="console",
        action=audit.SIGN_IN,
        outcome=AuditEntry.Outcome.REFUSED,
        details={"username": str(username)[:USERNAME_KEPT], **_where(request)},
    )


def _over_http(request: HttpRequest | None) -> bool:
    return request is not None and request.method is not None


def _where(request: HttpRequest) -> dict[str, str]:
    return {"path": request.path, "address": request.META.get("REMOTE_ADDR", "")}
