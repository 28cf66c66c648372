"""Start a set of processes, watch them, and stop every one of them together.

What `manage.py demo` runs the product with. Each child gets a session (so a process
group) of its own, its output goes to a log file, and:

- SIGINT or SIGTERM to the supervisor stops every child and `run()` returns 0;
- a child that exits on its own once everything is up is named and started again, as
  an orchestrator would (killing a replica is what a newcomer tries, to see a fleet
  serve through it); one that keeps exiting (MAX_RESTARTS within RESTART_WINDOW
  seconds), or exits while the demo starts, stops the rest and `run()` returns 1;
- a child dies with the supervisor: killed outright (SIGKILL), the supervisor cannot
  stop anything, so on Linux each child is told at start to take a SIGTERM when its
  parent dies (prctl's PR_SET_PDEATHSIG), and no child holds the demo's ports after it.

Stopping sends SIGTERM to each child's process group, waits up to `grace` seconds, then
SIGKILLs whatever is left, including descendants that moved to groups of their own (RQ
forks its work horse into a new process group).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PORT_IN_USE = (
    "port {port} on {host} is in use (wanted for {what}): stop whatever holds it, "
    "or set PORT to another base port"
)
CHILD_EXITED = "{name} (pid {pid}) exited with status {status}; stopping the rest"
RESTARTING = "{name} (pid {pid}) exited with status {status}; starting it again"
RESTARTED = "{name} started again (pid {pid}); its log goes on in {log}"
GIVING_UP = "{name} exited {count} times within {window:g} s; stopping the rest"
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
# The first restart is at once; each further one within the window waits twice as long.
RESTART_PAUSE = 0.5
NOT_READY = "{what} did not answer {url} within {timeout:g} s; stopping everything"
LOG_TAIL_LINES = 15


class ChildExited(Exception):
    def __init__(self, child: Child) -> None:
        self.child = child
        super().__init__(
            CHILD_EXITED.format(name=child.name, pid=child.pid, status=child.popen.returncode)
        )


class Signalled(Exception):
    pass


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    log_path: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    exits: list[float] = field(default_factory=list)  # monotonic times it exited at

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def check_ports_free(ports: Mapping[int, str], *, host: str = "127.0.0.1") -> str | None:
    """The first port (of {port: what it is for}) something already listens on, as a
    message; None when all are free."""
    for port, what in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # Servers bind with SO_REUSEADDR, so a port in TIME_WAIT is free to them too.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return PORT_IN_USE.format(port=port, host=host, what=what)
    return None


def answers(url: str, *, timeout: float = 2.0) -> bool:
    """Whether a GET of `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Supervisor:
    def __init__(
        self,
        *,
        log_dir: Path,
        env: Mapping[str, str],
        cwd: Path,
        grace: float = 10.0,
        say: Callable[[str], None] = print,
    ) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.cwd = cwd
        self.grace = grace
        self.say = say
        self.children: list[Child] = []
        self.signal_received: int | None = None
        self._wake = threading.Event()
        log_dir.mkdir(parents=True, exist_ok=True)

    def handle_signals(self) -> None:
        """From now on SIGINT and SIGTERM ask the supervisor to stop (it never dies of them)."""

        def ask_to_stop(signum: int, frame: object) -> None:
            self.signal_received = signum
            self._wake.set()

        signal.signal(signal.SIGINT, ask_to_stop)
        signal.signal(signal.SIGTERM, ask_to_stop)

    def start(self, name: str, argv: Sequence[str], **env: str) -> Child:
        self._check()
        log_path = self.log_dir / f"{name.replace(' ', '-')}.log"
        popen = self._spawn(list(argv), env, log_path)
        child = Child(name=name, popen=popen, log_path=log_path, argv=list(argv), env=env)
        self.children.append(child)
        return child

    def _spawn(self, argv: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                argv,
                cwd=self.cwd,
                env={**self.env, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own group: a terminal's Ctrl-C reaches only the supervisor, which
                # then stops the children in order, and killpg reaches their children.
                start_new_session=True,
                preexec_fn=_dies_with(os.getpid()),
            )

    def restart(self, child: Child) -> bool:
        """Start an exited child again, unless it keeps exiting; False if it does."""
        now = time.monotonic()
        child.exits = [at for at in child.exits if now - at < RESTART_WINDOW] + [now]
        if len(child.exits) > MAX_RESTARTS:
            count = len(child.exits)
            self.say(GIVING_UP.format(name=child.name, count=count, window=RESTART_WINDOW))
            tail = child.log_tail()
            if tail:
                self.say(f"last lines of {child.log_path}:\n{tail}")
            return False
        self.say(RESTARTING.format(name=child.name, pid=child.pid, status=child.popen.returncode))
        pause = RESTART_PAUSE * (2 ** (len(child.exits) - 2)) if len(child.exits) > 1 else 0.0
        if self._wake.wait(pause) and self.signal_received is not None:
            return True  # asked to stop meanwhile: the watch loop stops everything
        child.popen = self._spawn(child.argv, child.env, child.log_path)
        self.say(RESTARTED.format(name=child.name, pid=child.pid, log=child.log_path))
        return True

    def wait_answering(self, url: str, *, what: str, timeout: float) -> None:
        """Wait until `url` answers 200; raise if a child exits, a signal comes or time is up."""
        deadline = time.monotonic() + timeout
        while not answers(url):
            self._check()
            if time.monotonic() > deadline:
                raise TimeoutError(NOT_READY.format(what=what, url=url, timeout=timeout))
            self._wake.wait(0.1)

    def run(self, start: Callable[[], None]) -> int:
        """Call `start` (it starts the children and waits for them to answer), then watch
        them, starting again any that exits. Returns 0 after a signal; 1 after a child kept
        exiting, or exited while starting, or a start that timed out; every child is
        stopped either way."""
        try:
            start()
            while True:
                try:
                    self._check()
                except ChildExited as exited:
                    if not self.restart(exited.child):
                        self.stop()
                        return 1
                self._wake.wait(0.2)
        except Signalled:
            self.say(f"stopping ({signal.Signals(self.signal_received).name}) ...")
            self.stop()
            return 0
        except ChildExited as exited:
            self.report_exit(exited.child)
            self.stop()
            return 1
        except TimeoutError as exc:
            self.say(str(exc))
            self.stop()
            return 1
        except BaseException:
            self.stop()
            raise

    def report_exit(self, child: Child) -> None:
        self.say(str(ChildExited(child)))
        tail = child.log_tail()
        if tail:
            self.say(f"last lines of {child.log_path}:\n{tail}")

    def _check(self) -> None:
        if self.signal_received is not None:
            raise Signalled
        for child in self.children:
            if not child.alive():
                raise ChildExited(child)

    def stop(self) -> None:
        """SIGTERM every child's group (last started first), wait `grace`, SIGKILL the rest."""
        family = self._descendants()
        for child in reversed(self.children):
            if child.alive():
                _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child in reversed(self.children):
            try:
                child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        stragglers = [c for c in self.children if c.alive()]
        for child in stragglers:
            self.say(f"{child.name} (pid {child.pid}) did not stop within {self.grace:g} s: killed")
            _signal_group(child.pid, signal.SIGKILL)
        for process in family:
            try:
                if process.is_running():
                    process.kill()
            except psutil.NoSuchProcess:
                pass
        for child in self.children:
            child.popen.wait()
        psutil.wait_procs(family, timeout=self.grace)

    def _descendants(self) -> list[psutil.Process]:
        """Every process under the children, found now: once a child exits, its orphans
        are no longer traceable to it."""
        found = []
        for child in self.children:
            try:
                found.extend(psutil.Process(child.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        return found


PR_SET_PDEATHSIG = 1
_LIBC = (
    ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None
)


def _dies_with(parent: int) -> Callable[[], None] | None:
    """What a child runs between fork and exec, on Linux: take SIGTERM when `parent`
    dies (and at once if it died before this ran). Elsewhere nothing: stop the demo
    with Ctrl-C or SIGTERM there, which stops its children."""
    if _LIBC is None:
        return None
    prctl = _LIBC.prctl  # looked up before the fork, as the child must not load anything

    def take_sigterm_when_the_parent_dies() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return take_sigterm_when_the_parent_dies


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # gone already (or its group leader was reaped)
