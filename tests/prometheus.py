"""A private Prometheus (Debian's `prometheus`) scraping this test's processes, and PromQL
through its HTTP API, as an operator's dashboards and alerts run it."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from .processes import Process, free_port, wait_answering

INSTALL_PROMETHEUS = (
    "install prometheus: apt-get install prometheus (Debian's package; no `prometheus` on PATH)"
)
# Scraped this often, a rate over a few seconds moves within a second of the traffic.
SCRAPE_INTERVAL = "250ms"
RATE_WINDOW = "2s"


@dataclass
class PrometheusProcess(Process):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict]:
        """The instant vector (or scalar) `promql` gives now; an error fails the test."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = answer.json()
        assert body.get("status") == "success", f"{promql!r}: {body.get('error', body)}"
        return body["data"]["result"]

    def by(self, promql: str, label: str) -> dict[str, float]:
        """`promql`'s samples by the value of `label`."""
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(promql)}

    def metric_names(self) -> set[str]:
        answer = httpx.get(f"{self.url}/api/v1/label/__name__/values", timeout=10)
        return set(answer.json()["data"])


def start_prometheus(log_dir: Path, jobs: dict[str, list[str]]) -> PrometheusProcess:
    """Prometheus scraping each job's `http://host:port` targets at /metrics."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(INSTALL_PROMETHEUS)
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [t.removeprefix("http://") for t in targets]}],
            }
            for job, targets in jobs.items()
        ],
    }
    config_path = log_dir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = log_dir / "prometheus.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={log_dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = PrometheusProcess(popen=popen, log_path=log_path, port=port)
    wait_answering(prometheus, f"{prometheus.url}/-/ready", name="prometheus")
    return prometheus
