"""The system Chromium the browser tests and bench/console_latency.py drive (Debian's
`chromium`: Playwright cannot download its own browsers without network access)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_CHROMIUM = "install chromium: apt-get install chromium (/usr/bin/chromium is missing)"
# No sandbox (CI runs as root), and nothing that would reach for the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium (Playwright's sync API); the test fails saying what to install."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(INSTALL_CHROMIUM, pytrace=False)
    # Playwright's sync API keeps an event loop running in this thread; Django would
    # take the test's own ORM calls for calls from async code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            # launch() gives each run a fresh, temporary user-data-dir.
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
