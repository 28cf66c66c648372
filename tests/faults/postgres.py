"""A private PostgreSQL server for one test, to stop and start at will.

The machine's own PostgreSQL (127.0.0.1:5432) is shared with CI and other work, so a
test that takes the database away runs its own cluster: initdb into a temporary
folder, `pg_ctl` on a free port. PostgreSQL refuses to run as root, so as root the
cluster belongs to the `postgres` user and its commands run through `runuser`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.processes import free_port

MISSING = (
    "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: this fault test "
    "runs a private PostgreSQL. Install them (Debian: apt-get install -y postgresql)."
)
NO_USER = (
    "PostgreSQL will not run as root and there is no `postgres` user to run it as: "
    "install the postgresql package (it creates one), or run the tests as another user."
)


def server_binaries() -> Path:
    """The newest /usr/lib/postgresql/*/bin with initdb, or the one on PATH; else raise."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    raise RuntimeError(MISSING)


@dataclass
class PrivatePostgres:
    bin_dir: Path
    root: Path
    port: int
    run_as: str | None  # the user the server runs as, when the test runs as root

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/hotswap"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """Stop at once, as a crash would: open connections are cut off."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PrivatePostgres:
    """initdb a cluster in a temporary folder, start it, and create database `hotswap`."""
    bin_dir = server_binaries()
    run_as = None
    root = Path(tempfile.mkdtemp(prefix="hotswap-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(NO_USER) from None
        os.chown(root, owner.pw_uid, owner.pw_gid)
        run_as = "postgres"
    server = PrivatePostgres(bin_dir=bin_dir, root=root, port=free_port(), run_as=run_as)
    server._run("initdb", "-D", str(server.data), "-A", "trust", "-U", "postgres", "--no-sync")
    server.start()
    server._run("createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "hotswap")
    return server
