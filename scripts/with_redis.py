#!/usr/bin/env python3
"""Run a command with REDIS_URL pointing at a Redis, starting a private one if needed.

    python scripts/with_redis.py -- CMD [ARGS...]

If REDIS_URL is already set, CMD simply runs with it. Otherwise a throwaway
redis-server starts on a free port on 127.0.0.1 (no persistence; its files go under
$HOTSWAP_RUN_DIR/redis/, default run/redis/), CMD runs with
REDIS_URL=redis://127.0.0.1:PORT/0, and the server is stopped when CMD ends, however
it ends. The exit status is CMD's.

Standard library only: `make` runs this before the virtualenv may have any packages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent

NOT_FOUND_MESSAGE = (
    "redis-server not found on PATH: install it (Debian/Ubuntu: apt-get install "
    "redis-server; macOS: brew install redis) or set REDIS_URL=redis://HOST:PORT/0 "
    "to use one you run"
)
USAGE = "usage: python scripts/with_redis.py -- CMD [ARGS...]"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
# Another process can take the free port between our probe and redis binding it.
START_ATTEMPTS = 3


class RedisStartError(Exception):
    pass


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--":
        print(USAGE, file=sys.stderr)
        return 2
    command = argv[1:]

    if os.environ.get("REDIS_URL"):
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"with_redis: cannot run {command[0]!r}: {exc}", file=sys.stderr)
            return 127

    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print(NOT_FOUND_MESSAGE, file=sys.stderr)
        return 2

    # Until CMD runs, SIGTERM unwinds like Ctrl-C, so a Redis half started still stops.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server = start_redis(redis_server)
        try:
            return run_child(command, redis_url=f"redis://127.0.0.1:{server.port}/0")
        finally:
            server.stop()
    except RedisStartError as exc:
        print(f"with_redis: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


class RedisServer:
    def __init__(self, process: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
        self.process = process
        self.port = port
        self.workdir = workdir

    @property
    def logfile(self) -> Path:
        return self.workdir / "redis.log"

    def stop(self, *, keep_files: bool = False) -> None:
        """Stop the server; its files go too unless kept to explain a failed start."""
        if self.process.poll() is None:
            try:
                send_command(self.port, b"SHUTDOWN", b"NOSAVE")
            except OSError:
                pass  # it may already be on its way down; the wait below decides
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis(redis_server: str) -> RedisServer:
    # The same run directory the settings use (HOTSWAP_RUN_DIR, default ./run).
    run_dir = Path(os.environ.get("HOTSWAP_RUN_DIR") or PROJECT_DIR / "run")
    last_error = ""
    for _ in range(START_ATTEMPTS):
        port = free_port()
        workdir = run_dir / "redis" / str(port)
        workdir.mkdir(parents=True, exist_ok=True)
        options = {
            "bind": "127.0.0.1",
            "port": str(port),
            "save": "",
            "appendonly": "no",
            "dir": str(workdir),
            "logfile": str(workdir / "redis.log"),
            "pidfile": str(workdir / "redis.pid"),
            "daemonize": "no",
        }
        process = subprocess.Popen(
            [
                redis_server,
                *(arg for name, value in options.items() for arg in (f"--{name}", value)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C meant for CMD must not stop Redis under it.
            start_new_session=True,
        )
        server = RedisServer(process, port, workdir)
        try:
            ready = wait_until_ready(server)
        except BaseException:
            server.stop()
            raise
        if ready:
            return server
        exit_status = process.poll()
        server.stop(keep_files=True)
        log_tail = tail(server.logfile)
        what = (
            f"exited with status {exit_status} before answering PING"
            if exit_status is not None
            else f"did not answer PING within {START_TIMEOUT:g}s"
        )
        last_error = (
            f"redis-server on 127.0.0.1:{port} {what}. Last lines of {server.logfile}:\n{log_tail}"
        )
        if "Address already in use" not in log_tail:
            break
    raise RedisStartError(last_error)


def wait_until_ready(server: RedisServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            if send_command(server.port, b"PING") == b"+PONG\r\n":
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def send_command(port: int, *words: bytes) -> bytes:
    """Send one RESP command and return the raw reply (enough for PING and SHUTDOWN)."""
    request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        sock.sendall(request)
        return sock.recv(1024)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def run_child(command: list[str], *, redis_url: str) -> int:
    env = dict(os.environ, REDIS_URL=redis_url)
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as exc:
        print(f"with_redis: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        return 127

    def forward(signum: int, frame: object) -> None:
        # A Ctrl-C typed at the terminal already reached CMD (it shares our foreground
        # process group); sending it again would interrupt CMD's own clean-up.
        if signum == signal.SIGINT and in_terminal_foreground():
            return
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        returncode = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # The shell's convention for "killed by signal N".
    return 128 - returncode if returncode < 0 else returncode


def in_terminal_foreground() -> bool:
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
