"""Control-plane records: model versions, swaps, rollback requests and the audit log.

The database is the source of truth for which version each model serves
(`ServedModel.active_version`); Redis holds the fleet's fast copy and is republished
from here (`fleet_state.republish_from_database`). Rows change only through the domain
modules (registry, swapping, rollbacks, audit, tokens), never from views or the admin.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from swaps.engine.artifacts import DIGEST_LENGTH
from swaps.engine.spec import RUNTIMES, TensorSpec, VersionSpec

# Model and version names travel in V2 URLs and Redis keys: keep them plain.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_HELP = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
name_validator = RegexValidator(NAME_PATTERN, f"use {NAME_HELP}")


class ServedModel(models.Model):
    name = models.CharField(max_length=64, unique=True, validators=[name_validator])
    description = models.TextField(blank=True)
    # Set by the domain when the fleet's route flips (lifecycle.transition), never
    # edited by hand: the admin shows it read-only.
    active_version = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    rollback_requires_approval = models.BooleanField(
        default=False,
        help_text="Rollbacks wait until a second user with the approve permission approves.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            # Its own right: the person whose rollbacks are gated must not open the gate.
            ("set_rollback_approval", "Can change whether a model's rollbacks need approval")
        ]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    served_model = models.ForeignKey(ServedModel, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(max_length=64, validators=[name_validator])
    runtime = models.CharField(max_length=16, choices=[(r, r) for r in RUNTIMES])
    artifact = models.CharField(
        max_length=1024, help_text="A file path (sklearn, onnx) or package.module:factory (python)"
    )
    sample_input = models.JSONField(help_text="A batch the health check feeds to the model")
    expected_output_shape = models.JSONField(help_text="e.g. [-1] (-1: any size)")
    expected_output_dtype = models.CharField(max_length=16, help_text="A V2 datatype, e.g. INT64")
    memory_limit_bytes = models.PositiveBigIntegerField()
    inputs = models.JSONField(default=list, blank=True)
    outputs = models.JSONField(default=list, blank=True)
    # Adaptive batching (swaps/engine/batching.py); 0 or 1: off.
    max_batch_size = models.PositiveIntegerField(default=0, blank=True)
    max_batch_delay_ms = models.FloatField(default=0.0, blank=True)
    # The artifact's "sha256:<hex>" (swaps/engine/artifacts.py), taken by registration and
    # checked by every replica before it loads the file; never edited, like the rest of
    # the record. Empty for a python factory (no file), and for a version registered
    # before digests whose file was gone by then: neither is checked.
    artifact_digest = models.CharField(max_length=DIGEST_LENGTH, blank=True, editable=False)
    # The fields registration took from a trial of the model (swaps/model_probe.py),
    # because the registrant left them out.
    taken_from_model = models.JSONField(default=list, blank=True)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    registered_at = models.DateTimeField(auto_now_add=True)
    # When the fleet first routed to it: a rollback may only target a version that served.
    first_served_at = models.DateTimeField(null=True, blank=True)
    # A retired version is no swap's or rollback's target and in no form; it stays in the
    # records and their history. Set and cleared by registry.retire_version.
    retired_at = models.DateTimeField(null=True, blank=True)
    # A quarantined version crashed, hung or broke its memory limit in a replica's trial
    # load: no replica loads it and it is no target until someone clears it (quarantine.py).
    quarantined_at = models.DateTimeField(null=True, blank=True)
    quarantine_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["served_model__name", "registered_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["served_model", "version"], name="one_record_per_model_version"
            )
        ]
        permissions = [
            ("register_version", "Can register a model version"),
            # A python factory or a pickle (joblib) runs its code wherever it loads.
            ("register_code", "Can register a version whose artifact is code"),
        ]

    def __str__(self) -> str:
        return f"{self.served_model.name} {self.version}"

    def as_spec(self) -> VersionSpec:
        return VersionSpec(
            model_id=self.served_model.name,
            version=self.version,
            runtime=self.runtime,
            artifact=self.artifact,
            sample_input=self.sample_input,
            expected_output_shape=tuple(self.expected_output_shape),
            expected_output_dtype=self.expected_output_dtype,
            memory_limit_bytes=self.memory_limit_bytes,
            inputs=tuple(TensorSpec.from_dict(t) for t in self.inputs),
            outputs=tuple(TensorSpec.from_dict(t) for t in self.outputs),
            max_batch_size=self.max_batch_size,
            max_batch_delay_ms=self.max_batch_delay_ms,
            artifact_digest=self.artifact_digest,
        )


class Swap(models.Model):
    """One swap, rollback or first deploy of a model, from request to final state."""

    class Kind(models.TextChoices):
        SWAP = "swap"
        ROLLBACK = "rollback"
        DEPLOY = "deploy"
        ROLLOUT = "rollout"  # a swap in steps, judged on live traffic (Rollout)

    class State(models.TextChoices):
        PENDING = "pending"  # accepted, its runner not started yet
        SWAPPING = "swapping"
        DRAINING = "draining"
        COMPLETED = "completed"
        FAILED = "failed"

    RUNNING = (State.PENDING, State.SWAPPING, State.DRAINING)
    FINAL = (State.COMPLETED, State.FAILED)

    served_model = models.ForeignKey(ServedModel, on_delete=models.PROTECT, related_name="swaps")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SWAP)
    from_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    to_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    message = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    rq_job_id = models.CharField(max_length=200, blank=True)
    # Why a swap was forced past the check that its target keeps the clients working;
    # empty when it was not (the check then refuses an incompatible target).
    forced_reason = models.TextField(blank=True)
    requests_drained = models.PositiveIntegerField(null=True, blank=True)
    requests_remaining = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The database's own guard against two operations on one model: of two
            # simultaneous requests, the second insert fails whatever the timing.
            models.UniqueConstraint(
                fields=["served_model"],
                condition=Q(state__in=["pending", "swapping", "draining"]),
                name="one_running_operation_per_model",
            )
        ]
        permissions = [("start_swap", "Can start a swap")]

    def __str__(self) -> str:
        source = self.from_version.version if self.from_version else "-"
        return f"{self.kind} {self.served_model.name} {source} -> {self.to_version.version}"

    @property
    def is_running(self) -> bool:
        return self.state in self.RUNNING


class Rollout(models.Model):
    """A rollout's plan and where it stands; its Swap row (same id) holds its state.

    The steps move the share of unpinned requests the candidate answers (a canary), or
    the share copied to it (a shadow), while the analysis judges it on live traffic.
    Each change here is written with a transition of its Swap (rollouts.py), so the
    record never shows a weight the fleet did not apply.
    """

    class Mode(models.TextChoices):
        CANARY = "canary"
        SHADOW = "shadow"

    swap = models.OneToOneField(
        Swap, primary_key=True, on_delete=models.CASCADE, related_name="rollout"
    )
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.CANARY)
    # [{"weight": 10, "pause": 60}, ...]: a pause of null waits for a person to promote.
    steps = models.JSONField()
    # Thresholds (rollout_analysis.THRESHOLDS); none given judges nothing automatically.
    analysis = models.JSONField(default=dict, blank=True)
    step = models.IntegerField(default=-1, help_text="the step under way; -1 before the first")
    weight = models.PositiveSmallIntegerField(default=0, help_text="what the fleet applies now")
    step_started_at = models.DateTimeField(null=True, blank=True)
    # A person's promotion: the step to go to (len(steps): all the way), until taken.
    promote_to = models.IntegerField(null=True, blank=True)
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    abort_reason = models.TextField(blank=True)
    aborted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Where the model's rollbacks need a second person, so does leaving the first step:
    # someone other than the requester, holding the approve permission.
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    # The last analysis: per version figures and each check's verdict (the console's).
    verdict = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"rollout {self.swap_id} ({self.mode}, step {self.step + 1} of {len(self.steps)})"


class SwapTransition(models.Model):
    """Every state a swap passed through, and each pending-count change while draining."""

    swap = models.ForeignKey(Swap, on_delete=models.CASCADE, related_name="transitions")
    state = models.CharField(max_length=16, choices=Swap.State.choices)
    pending_requests = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.swap_id} {self.state} at {self.at:%H:%M:%S.%f}"


class RollbackRequest(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "waiting for approval"
        APPROVED = "approved"
        REJECTED = "rejected"

    served_model = models.ForeignKey(
        ServedModel, on_delete=models.PROTECT, related_name="rollback_requests"
    )
    from_version = models.ForeignKey(
        ModelVersion, null=True, on_delete=models.PROTECT, related_name="+"
    )
    target_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    approval_required = models.BooleanField()
    state = models.CharField(max_length=16, choices=State.choices)
    # Who approved or rejected it; empty when no approval was required.
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    # The rollback it started, once approved (or at once when no approval is required).
    swap = models.OneToOneField(
        Swap, null=True, blank=True, on_delete=models.PROTECT, related_name="rollback_request"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("request_rollback", "Can request a rollback"),
            ("approve_rollback", "Can approve or reject a rollback request"),
        ]

    def __str__(self) -> str:
        return f"rollback of {self.served_model.name} to {self.target_version.version}"


class AppendOnly(Exception):
    """Raised on any attempt to change or remove an audit entry."""


AUDIT_IS_APPEND_ONLY = "the audit log is append-only: entries are never changed or deleted"


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnly(AUDIT_IS_APPEND_ONLY)

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnly(AUDIT_IS_APPEND_ONLY)


class AuditEntry(models.Model):
    """One attempt to change something, allowed or refused, or an operation's outcome.

    Names are copied rather than linked: an entry must outlive the user, model or
    version it mentions, and a refused attempt may name things that never existed.
    Written only by `swaps.audit.audit`, which chains each entry to the one before it
    (`swaps.audit_chain`); a database trigger refuses UPDATE (and, on PostgreSQL,
    DELETE) of a row, and `manage.py verify_audit` finds what got past it.
    """

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted"
        REFUSED = "refused"
        COMPLETED = "completed"
        FAILED = "failed"

    # Set by `audit()` before the row exists (not auto_now_add, which would set it after
    # the hash that covers it was taken).
    at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    actor = models.CharField(max_length=150, help_text="username, or 'anonymous'")
    via = models.CharField(
        max_length=96,
        help_text="api, session, console, admin, worker, or cli with the OS user that ran it",
    )
    action = models.CharField(max_length=32, db_index=True)
    model = models.CharField(max_length=64, blank=True, db_index=True)
    from_version = models.CharField(max_length=64, blank=True)
    to_version = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    details = models.JSONField(default=dict, blank=True)
    # The hash chain. Unique, so two writers that read the same head cannot both commit.
    sequence = models.PositiveBigIntegerField(unique=True, editable=False)
    previous_hash = models.CharField(max_length=64, editable=False)
    entry_hash = models.CharField(max_length=64, editable=False)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnly(AUDIT_IS_APPEND_ONLY)
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnly(AUDIT_IS_APPEND_ONLY)


class ApiToken(models.Model):
    """A bearer token for automation. Only the SHA-256 of its secret is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    # The secret's first characters, so a person can tell their tokens apart.
    prefix = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}...) of {self.user}"
