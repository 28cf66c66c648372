from __future__ import annotations

from django.apps import AppConfig


class SwapsConfig(AppConfig):
    name = "swaps"
    verbose_name = "Hotswap"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from swaps import audit_signals, checks  # noqa: F401  (connect receivers, register checks)
