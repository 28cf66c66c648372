"""`manage.py demo`: the product on one machine (for now: the engine in the terminal)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from swaps import engine_demo


class Command(BaseCommand):
    help = "Run the hot-swap engine end to end on the demo iris models, under traffic."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--pause", type=float, default=1.0, help="seconds between steps")

    def handle(self, *args, pause: float, **options) -> None:
        models_dir = Path(settings.HOTSWAP_RUN_DIR) / "models"
        code = engine_demo.main(["--models-dir", str(models_dir), "--pause", str(pause)])
        if code:
            raise SystemExit(code)
