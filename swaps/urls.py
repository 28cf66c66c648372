"""The console's pages and forms, and the JSON API under /api/."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from swaps import views

app_name = "swaps"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.dashboard, name="dashboard"),
    path("models/<str:model>/", views.model_detail, name="model"),
    path("models/<str:model>/history/", views.model_history, name="history"),
    path("models/<str:model>/audit/", views.model_audit, name="audit"),
    path("models/<str:model>/swap", views.start_swap, name="swap"),
    path("models/<str:model>/rollback", views.request_rollback, name="rollback"),
    path("approvals/", views.approvals, name="approvals"),
    path("rollbacks/<int:request_id>/approve", views.approve_rollback, name="approve"),
    path("rollbacks/<int:request_id>/reject", views.reject_rollback, name="reject"),
    path("api/", include("swaps.api_urls")),
]
