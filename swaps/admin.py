"""The admin site: version records, and read-only views of what the domain recorded.

Nothing here edits state behind the domain's back. Which version a model serves is
read-only (swaps change it); adding a version goes through `register_version`; the
approval setting, rollback decisions and token revocation call the domain, which
checks permissions and writes the audit log; each action is offered only to those
holding the permission it needs, so a forged POST of one runs nothing. Swaps,
transitions and the audit log are read-only, and the audit log can be neither changed
nor deleted.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from swaps import permissions, registry, rollbacks, tokens
from swaps.models import (
    ApiToken,
    AuditEntry,
    ModelVersion,
    RollbackRequest,
    ServedModel,
    Swap,
    SwapTransition,
)
from swaps.refusals import Refused


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class VersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ["version", "runtime", "artifact", "registered_by", "registered_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ServedModel)
class ServedModelAdmin(admin.ModelAdmin):
    list_display = ["name", "active_version", "rollback_requires_approval", "created_at"]
    list_filter = ["rollback_requires_approval"]
    search_fields = ["name", "description"]
    # Models come into being with their first version (register_version); the name is
    # their id in the fleet and every V2 URL, and the rest changes through the domain.
    readonly_fields = ["name", "active_version", "rollback_requires_approval", "created_at"]
    inlines = [VersionInline]
    actions = ["require_approval", "drop_approval"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_set_rollback_approval_permission(self, request: HttpRequest) -> bool:
        # Offered only to those the domain lets change the gate (it checks again).
        return request.user.has_perm(permissions.SET_ROLLBACK_APPROVAL)

    @admin.action(
        description="Require approval for rollbacks", permissions=["set_rollback_approval"]
    )
    def require_approval(self, request: HttpRequest, queryset: Any) -> None:
        self._set_approval(request, queryset, True)

    @admin.action(
        description="Stop requiring approval for rollbacks", permissions=["set_rollback_approval"]
    )
    def drop_approval(self, request: HttpRequest, queryset: Any) -> None:
        self._set_approval(request, queryset, False)

    def _set_approval(self, request: HttpRequest, queryset: Any, required: bool) -> None:
        for model in queryset:
            try:
                registry.set_rollback_approval(
                    model=model, required=required, user=request.user, via="admin"
                )
            except Refused as refusal:
                self.message_user(request, refusal.message, messages.ERROR)


class VersionForm(forms.ModelForm):
    class Meta:
        model = ModelVersion
        fields = ["served_model", *registry.VERSION_FIELDS]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        served = data["served_model"]
        try:
            registry.check_version_fields(
                model=served.name, **{name: data.get(name) for name in registry.VERSION_FIELDS}
            )
        except Refused as refusal:
            for name, problem in refusal.fields.items():
                self.add_error(name if name != "model" else "served_model", problem)
        return data


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    form = VersionForm
    list_display = [
        "served_model",
        "version",
        "runtime",
        "registered_by",
        "registered_at",
        "retired_at",
    ]
    list_filter = ["served_model", "runtime", "registered_at", "retired_at"]
    search_fields = ["version", "served_model__name", "artifact"]
    list_select_related = ["served_model", "registered_by"]
    date_hierarchy = "registered_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(permissions.REGISTER_VERSION)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Taken by registration from the file itself: shown on a record, never entered.
        return ["artifact_digest"] if obj is not None else []

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Registered versions are immutable (replicas may have loaded them): view only.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ModelVersion, form: Any, change: bool) -> None:
        data = form.cleaned_data
        registered = registry.register_version(
            model=data["served_model"].name,
            **{name: data.get(name) for name in registry.VERSION_FIELDS},
            user=request.user,
            via="admin",
        )
        obj.pk = registered.pk
        obj.refresh_from_db()


class TransitionInline(admin.TabularInline):
    model = SwapTransition
    fields = ["at", "state", "pending_requests", "message"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Swap)
class SwapAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "served_model",
        "kind",
        "from_version",
        "to_version",
        "state",
        "requested_by",
        "created_at",
        "finished_at",
    ]
    list_filter = ["state", "kind", "served_model"]
    search_fields = ["served_model__name", "message", "rq_job_id"]
    list_select_related = ["served_model", "from_version", "to_version", "requested_by"]
    inlines = [TransitionInline]


@admin.register(RollbackRequest)
class RollbackRequestAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "served_model",
        "target_version",
        "state",
        "requested_by",
        "decided_by",
        "created_at",
    ]
    list_filter = ["state", "approval_required", "served_model"]
    search_fields = ["served_model__name", "reason"]
    actions = ["approve", "reject"]

    def has_approve_rollback_permission(self, request: HttpRequest) -> bool:
        # Offered only to approvers; the domain checks again, and refuses their own.
        return request.user.has_perm(permissions.APPROVE_ROLLBACK)

    @admin.action(description="Approve (and roll back now)", permissions=["approve_rollback"])
    def approve(self, request: HttpRequest, queryset: Any) -> None:
        self._decide(request, queryset, rollbacks.approve_rollback)

    @admin.action(description="Reject", permissions=["approve_rollback"])
    def reject(self, request: HttpRequest, queryset: Any) -> None:
        self._decide(request, queryset, rollbacks.reject_rollback)

    def _decide(self, request: HttpRequest, queryset: Any, decide: Any) -> None:
        for rollback in queryset:
            try:
                decided = decide(request_id=rollback.pk, user=request.user, via="admin")
            except Refused as refusal:
                self.message_user(request, refusal.message, messages.ERROR)
            else:
                self.message_user(request, f"rollback request {decided.pk}: {decided.state}")


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor", "via", "action", "model", "to_version", "outcome"]
    list_filter = ["action", "outcome", "via", "model"]
    search_fields = ["actor", "model", "from_version", "to_version"]
    date_hierarchy = "at"
    readonly_fields = ["pretty_details"]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}  # not even "delete selected"

    @admin.display(description="details")
    def pretty_details(self, entry: AuditEntry) -> str:
        return json.dumps(entry.details, indent=2, sort_keys=True)


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__username", "prefix"]
    actions = ["revoke"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        # The action is offered only to those the domain lets revoke others' tokens.
        return request.user.has_perm(tokens.CHANGE_TOKENS)

    @admin.action(description="Revoke", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        for token in queryset.select_related("user"):
            try:
                tokens.revoke_api_token(token=token, user=request.user, via="admin")
            except Refused as refusal:
                self.message_user(request, refusal.message, messages.ERROR)
                return
        self.message_user(request, "revoked; requests with these tokens now get 401")
