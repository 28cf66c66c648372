"""The system Chromium the browser tests and bench/console_latency.py drive (Debian's
`chromium`: Playwright cannot download its own browsers without network access)."""

from __future__ import annotations

from pathlib import Path

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
