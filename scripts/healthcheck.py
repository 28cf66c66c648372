#!/usr/bin/env python3
"""Container health checks for each Hotswap role (compose.yaml runs them).

    python scripts/healthcheck.py web       # Django answers on :8000 (the login page)
    python scripts/healthcheck.py replica   # GET :8001/v2/health/ready is 200
    python scripts/healthcheck.py worker    # an RQ worker of this host is registered

Exit status 0 when healthy, 1 otherwise, with the reason on stderr. `--port` changes the
port. Standard library only, except `worker`, which reads RQ's registry with rq.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import sys

TIMEOUT = 5.0


def web(port: int) -> str | None:
    """Django answers its login page: 200, or the redirect to HTTPS when DEBUG is off.

    The request names the first of ALLOWED_HOSTS, so Django's host check passes; the
    redirect counts as healthy because TLS ends at the load balancer, not here.
    """
    hosts = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
    host = next((h for h in hosts if not h.startswith((".", "*"))), "localhost")
    status = _get(port, "/accounts/login/", host=host)
    return None if status in (200, 301, 302) else f"the login page answered {status}"


def replica(port: int) -> str | None:
    """Ready: synced with the fleet and serving every route it knows."""
    status = _get(port, "/v2/health/ready", host="localhost")
    return None if status == 200 else f"/v2/health/ready answered {status}"


def worker(port: int) -> str | None:
    """An RQ worker started on this host (container) is registered in Redis.

    RQ drops a worker from its registry once its heartbeat lapses, so a hung or dead
    worker fails this check.
    """
    from redis import Redis
    from rq import Worker

    connection = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    here = socket.gethostname()
    if any(w.hostname == here for w in Worker.all(connection=connection)):
        return None
    return f"no RQ worker of host {here} is registered"


def _get(port: int, path: str, *, host: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request("GET", path, headers={"Host": host})
        return connection.getresponse().status
    finally:
        connection.close()


CHECKS = {"web": (web, 8000), "replica": (replica, 8001), "worker": (worker, 0)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=sorted(CHECKS))
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    check, default_port = CHECKS[args.role]
    try:
        problem = check(args.port or default_port)
    except Exception as exc:  # refused, timed out, Redis away: all mean unhealthy
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        print(f"unhealthy {args.role}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
