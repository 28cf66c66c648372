"""The JSON shapes of control-plane records, shared by the API and the CLI's --json."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from swaps.models import ModelVersion, RollbackRequest, ServedModel, Swap


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _name(user: Any) -> str | None:
    return user.get_username() if user is not None else None


def version_document(version: ModelVersion) -> dict[str, Any]:
    return {
        "model": version.served_model.name,
        "version": version.version,
        "runtime": version.runtime,
        "artifact": version.artifact,
        "artifact_digest": version.artifact_digest,
        "sample_input": version.sample_input,
        "expected_output_shape": version.expected_output_shape,
        "expected_output_dtype": version.expected_output_dtype,
        "memory_limit_bytes": version.memory_limit_bytes,
        "inputs": version.inputs,
        "outputs": version.outputs,
        "max_batch_size": version.max_batch_size,
        "max_batch_delay_ms": version.max_batch_delay_ms,
        "taken_from_model": version.taken_from_model,
        "registered_by": _name(version.registered_by),
        "registered_at": _time(version.registered_at),
        "first_served_at": _time(version.first_served_at),
        "retired_at": _time(version.retired_at),
        "quarantined_at": _time(version.quarantined_at),
        "quarantine_reason": version.quarantine_reason,
    }


def model_document(model: ServedModel, *, detail: bool = False) -> dict[str, Any]:
    running = model.swaps.filter(state__in=Swap.RUNNING).first()
    document: dict[str, Any] = {
        "name": model.name,
        "description": model.description,
        "active_version": model.active_version.version if model.active_version else None,
        "rollback_requires_approval": model.rollback_requires_approval,
        "versions": [v.version for v in model.versions.all()],
        "running": swap_document(running, transitions=False) if running else None,
    }
    if detail:
        versions = model.versions.select_related("served_model", "registered_by")
        document["versions"] = [version_document(v) for v in versions]
        document["recent_swaps"] = [
            swap_document(s, transitions=False) for s in _swaps(model.swaps.all()[:20])
        ]
        pending = model.rollback_requests.filter(state=RollbackRequest.State.PENDING)
        document["pending_rollbacks"] = [rollback_document(r) for r in _requests(pending)]
    return document


def swap_document(swap: Swap, *, transitions: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": swap.pk,
        "model": swap.served_model.name,
        "kind": swap.kind,
        "from_version": swap.from_version.version if swap.from_version else None,
        "to_version": swap.to_version.version,
        "state": swap.state,
        "message": swap.message,
        "requested_by": _name(swap.requested_by),
        "rq_job_id": swap.rq_job_id,
        "forced_reason": swap.forced_reason,
        "requests_drained": swap.requests_drained,
        "requests_remaining": swap.requests_remaining,
        "created_at": _time(swap.created_at),
        "started_at": _time(swap.started_at),
        "finished_at": _time(swap.finished_at),
    }
    if transitions:
        document["transitions"] = [
            {
                "state": t.state,
                "pending_requests": t.pending_requests,
                "message": t.message,
                "at": _time(t.at),
            }
            for t in swap.transitions.all()
        ]
    return document


def rollback_document(request: RollbackRequest) -> dict[str, Any]:
    return {
        "id": request.pk,
        "model": request.served_model.name,
        "from_version": request.from_version.version if request.from_version else None,
        "target_version": request.target_version.version,
        "reason": request.reason,
        "state": request.state,
        "approval_required": request.approval_required,
        "requested_by": _name(request.requested_by),
        "decided_by": _name(request.decided_by),
        "decided_at": _time(request.decided_at),
        "created_at": _time(request.created_at),
        "swap": swap_document(request.swap) if request.swap_id else None,
    }


def _swaps(queryset):
    return queryset.select_related("served_model", "from_version", "to_version", "requested_by")


def _requests(queryset):
    return queryset.select_related(
        "served_model", "from_version", "target_version", "requested_by", "decided_by", "swap"
    )
