"""The trial server: a warm process that tries each version's load in a child of its own.

`sandbox.Sandbox` starts it as `python -m swaps.engine.trial_server` with an environment
that holds no secrets (no Redis URL, no fleet key, no database) and talks to it in JSON
lines. It imports the runtimes' frameworks once, so a trial costs a fork rather than a
Python start-up and a scikit-learn import (about 1.5 s on a 2-core host): each runtime's
framework the first time a version of it is tried, and whatever else of the framework
packages a trial imported, after it. For every request it forks a child that:

- drops its core-dump limit and caps its address space at what it already maps plus the
  version's memory limit plus `slack`, so a runaway allocation fails in the child;
- loads the version as `runtimes.load` does (measured, in a process that runs nothing
  else, so tracemalloc and the resident-set reading see only this load) and runs the
  health check's sample inference;
- writes one JSON result to a pipe and exits.

The server waits for the child's exit (a pidfd) and its pipe in one selector loop on one
thread (forking from a threaded process is what makes fork unsafe), kills a child that
outlives its time limit, and answers with the result or with why the child gave none.

Request: `{"id": n, "spec": {...}, "timeout": s, "slack": bytes, "describe": bool}`.
Answer: `{"id": n, "ok": bool, "reason": str, "contained": bool, "memory_bytes": int,
"seconds": s}`; `contained` says the child crashed, hung, or broke its memory limit.
With `describe` (registration: `swaps.model_probe`) the child runs the sample, or a
row of zeros when the spec has none, instead of the health check, and the answer's
`description` says what the model takes and gives: its inputs and outputs, the sample
it ran, and the first output's shape (batch dimension -1) and datatype.
"""

from __future__ import annotations

import gc
import importlib
import os
import resource
import selectors
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import orjson

from . import health, runtimes
from .errors import LoadError
from .spec import VersionSpec
from .tensors import v2_datatype

READY = b'{"ready": true}\n'
TIMED_OUT = "its load did not finish within {seconds:g} s"
KILLED = "its load crashed the process that tried it ({signal})"
EXITED = "its load ended the process that tried it (exit status {status})"
NO_MEMORY = "its load went over the memory limit ({limit} MB, and {slack} MB of slack)"
OVER_LIMIT = "its load kept {used} MB, over its {limit} MB memory limit"
_MEMORY_SIGNS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "Failed to allocate")
# Packages whose modules a trial imported the server imports too, so the next trial of
# the same kind neither pays for them nor has them counted as its memory (a logistic
# regression's first trial kept 18.7 MB, 18.7 of them sklearn.linear_model). Only these:
# importing a module the artifact named would run the artifact's code in the server.
WARMED_PACKAGES = frozenset({"numpy", "scipy", "sklearn", "joblib", "onnxruntime", "threadpoolctl"})


@dataclass
class _Trial:
    request: dict
    request_id: int
    pid: int
    pidfd: int
    result_fd: int
    deadline: float
    timeout: float
    started: float
    output: bytearray = field(default_factory=bytearray)
    killed: bool = False


def main() -> None:
    # Whatever the artifact prints must not reach stdout, which carries the answers.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # The runtimes the fleet's versions use, named by the serving process: imported
    # while it starts up, rather than in the way of its first trial.
    _warm(module for runtime in sys.argv[1:] for module in runtimes.FRAMEWORKS.get(runtime, ()))
    answers.write(READY)
    _serve(answers)


def _warm(modules) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # a broken install fails the trials that need it, not the server
            pass
    # What is imported now is never garbage: the children's collections skip it.
    gc.freeze()


def _serve(answers) -> None:
    selector = selectors.DefaultSelector()
    requests = sys.stdin.buffer
    os.set_blocking(requests.fileno(), False)
    selector.register(requests.fileno(), selectors.EVENT_READ, "requests")
    trials: dict[int, _Trial] = {}
    pending = bytearray()

    def begin(request: dict) -> None:
        trial = _start(request)
        trials[trial.pid] = trial
        selector.register(trial.result_fd, selectors.EVENT_READ, ("output", trial))
        selector.register(trial.pidfd, selectors.EVENT_READ, ("exit", trial))

    while True:
        now = time.monotonic()
        timeout = min((t.deadline - now for t in trials.values()), default=None)
        for key, _ in selector.select(None if timeout is None else max(timeout, 0)):
            if key.data == "requests":
                chunk = os.read(key.fd, 65536)
                if not chunk:  # the serving process is gone: nobody to answer
                    for trial in trials.values():
                        _kill(trial)
                    return
                pending.extend(chunk)
                while b"\n" in pending:
                    line, _, rest = bytes(pending).partition(b"\n")
                    pending[:] = rest
                    begin(orjson.loads(line))
            else:
                kind, trial = key.data
                if kind == "output":
                    chunk = os.read(trial.result_fd, 65536)
                    if chunk:
                        trial.output.extend(chunk)
                    else:
                        selector.unregister(trial.result_fd)
                else:
                    again = _finish(trial, selector, answers)
                    del trials[trial.pid]
                    if again is not None:
                        begin(again)
        now = time.monotonic()
        for trial in trials.values():
            if now >= trial.deadline and not trial.killed:
                _kill(trial)


def _start(request: dict) -> _Trial:
    # A runtime's framework is imported the first time one of its versions is tried,
    # not at start: a replica serving only python versions never pays for scikit-learn.
    framework = runtimes.FRAMEWORKS.get(request["spec"].get("runtime"), ())
    if any(module not in sys.modules for module in framework):
        _warm(framework)
    read_end, write_end = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _try(request, write_end)
    os.close(write_end)
    os.set_blocking(read_end, False)
    return _Trial(
        request=request,
        request_id=request["id"],
        pid=pid,
        pidfd=os.pidfd_open(pid),
        result_fd=read_end,
        deadline=started + request["timeout"],
        timeout=request["timeout"],
        started=started,
    )


def _kill(trial: _Trial) -> None:
    trial.killed = True
    try:
        os.kill(trial.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _finish(trial: _Trial, selector: selectors.BaseSelector, answers) -> dict | None:
    """Answer the finished trial; or, once, return its request to try again warm: a
    trial over its memory that imported packages the server had not (a python version
    importing scikit-learn was charged 120 MB for it, and failed a 95 MB limit on every
    replica's first try)."""
    _, status = os.waitpid(trial.pid, 0)
    while chunk := _read_rest(trial.result_fd):
        trial.output.extend(chunk)
    for fd in (trial.result_fd, trial.pidfd):
        if fd in selector.get_map():
            selector.unregister(fd)
        os.close(fd)
    seconds = time.monotonic() - trial.started
    answer = {"id": trial.request_id, "seconds": seconds, "memory_bytes": 0}
    if trial.killed:
        answer |= {
            "ok": False,
            "contained": True,
            "reason": TIMED_OUT.format(seconds=trial.timeout),
        }
    elif trial.output:
        answer |= orjson.loads(bytes(trial.output))
    elif os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        answer |= {"ok": False, "contained": True, "reason": KILLED.format(signal=name)}
    else:
        reason = EXITED.format(status=os.waitstatus_to_exitcode(status))
        answer |= {"ok": False, "contained": True, "reason": reason}
    new = [m for m in answer.pop("imported", ()) if m not in sys.modules]
    if new and answer.pop("over_memory", False) and not trial.request.get("warm"):
        _warm(new)
        return {**trial.request, "warm": True}
    answer.pop("over_memory", None)
    answers.write(orjson.dumps(answer) + b"\n")
    _warm(new)
    return None


def _read_rest(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def _try(request: dict, result_fd: int) -> None:
    """In the forked child: load, check, answer on `result_fd`, exit. Never returns."""
    imported_before = set(sys.modules)
    try:
        # Nothing of the server's reaches the artifact's code: not the answers' pipe
        # (it would forge answers), not its requests, not other trials' pipes.
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, os.sysconf("SC_OPEN_MAX"))
        spec = VersionSpec.from_dict(request["spec"])
        slack = int(request["slack"])
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        mapped = _mapped_bytes()
        ceiling = mapped + spec.memory_limit_bytes + slack
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, resource.RLIM_INFINITY))
        answer = (_describe if request.get("describe") else _load_and_check)(spec, slack)
    except BaseException as exc:  # even SystemExit: the child answers, then exits
        reason = runtimes.LOAD_FAILED.format(
            version=request["spec"]["version"],
            model_id=request["spec"]["model_id"],
            artifact=request["spec"]["artifact"],
            cause=runtimes.describe_exception(exc),
        )
        answer = {"ok": False, "contained": False, "reason": reason}
    answer["imported"] = [
        name
        for name in sys.modules
        if name not in imported_before and name.partition(".")[0] in WARMED_PACKAGES
    ]
    try:
        os.write(result_fd, orjson.dumps(answer))
    finally:
        os._exit(0)


def _load_and_check(spec: VersionSpec, slack: int) -> dict:
    model = _load_within_limit(spec, slack)
    if isinstance(model, dict):  # the answer that says why it did not load
        return model
    # The sample inference, so a predict that crashes or hangs does it here; what it
    # answers is judged again where the version serves.
    health.probe(spec=spec, model=model)
    return {"ok": True, "contained": False, "reason": "", "memory_bytes": model.memory_bytes}


def _load_within_limit(spec: VersionSpec, slack: int) -> runtimes.RuntimeModel | dict:
    """The version loaded, or the failed answer that says why not."""
    limit = f"{spec.memory_limit_bytes / 2**20:.1f}"
    try:
        model = runtimes.load(spec)
    except LoadError as exc:
        if _out_of_memory(exc):
            reason = NO_MEMORY.format(limit=limit, slack=f"{slack / 2**20:.0f}")
            return {"ok": False, "contained": True, "reason": reason, "over_memory": True}
        return {"ok": False, "contained": False, "reason": exc.message}
    if model.memory_bytes > spec.memory_limit_bytes:
        used = f"{model.memory_bytes / 2**20:.1f}"
        reason = OVER_LIMIT.format(used=used, limit=limit)
        return {"ok": False, "contained": True, "reason": reason, "over_memory": True}
    return model


def _describe(spec: VersionSpec, slack: int) -> dict:
    model = _load_within_limit(spec, slack)
    if isinstance(model, dict):  # the answer that says why it did not load
        return model
    if not model.inputs:
        return {"ok": False, "contained": False, "reason": "the model declares no inputs"}
    first = model.inputs[0]
    sample = runtimes.sample_batch(spec, first)
    outputs = model.predict({first.name: sample})
    if not outputs:
        return {"ok": False, "contained": False, "reason": "its sample inference gave no outputs"}
    primary = np.asarray(next(iter(outputs.values())))
    description = {
        "inputs": [t.as_dict() for t in model.inputs],
        "outputs": [t.as_dict() for t in model.outputs],
        "sample_input": sample.tolist(),
        "expected_output_shape": [-1, *primary.shape[1:]] if primary.ndim else [],
        "expected_output_dtype": v2_datatype(primary.dtype),
    }
    return {
        "ok": True,
        "contained": False,
        "reason": "",
        "memory_bytes": model.memory_bytes,
        "description": description,
    }


def _out_of_memory(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError) or any(s in str(seen) for s in _MEMORY_SIGNS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


if __name__ == "__main__":
    main()
