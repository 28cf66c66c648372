"""The JSON API's paths (mounted under /api/ by swaps/urls.py)."""

from __future__ import annotations

from django.urls import path

from swaps import api

urlpatterns = [
    path("models", api.models, name="api-models"),
    path("models/<str:model>", api.model_detail, name="api-model"),
    path("models/<str:model>/versions", api.register_version, name="api-versions"),
    path(
        "models/<str:model>/versions/<str:version>/retire",
        api.retire_version,
        name="api-retire",
    ),
    path(
        "models/<str:model>/versions/<str:version>/restore",
        api.restore_version,
        name="api-restore",
    ),
    path(
        "models/<str:model>/versions/<str:version>/clear-quarantine",
        api.clear_quarantine,
        name="api-clear-quarantine",
    ),
    path("models/<str:model>/swaps", api.start_swap, name="api-swaps"),
    path("models/<str:model>/status", api.model_status, name="api-status"),
    path("models/<str:model>/rollbacks", api.request_rollback, name="api-rollbacks"),
    path("swaps/<int:swap_id>", api.swap_detail, name="api-swap"),
    path("rollbacks/<int:request_id>", api.rollback_detail, name="api-rollback"),
    path("rollbacks/<int:request_id>/approve", api.approve_rollback, name="api-approve"),
    path("rollbacks/<int:request_id>/reject", api.reject_rollback, name="api-reject"),
]
