"""`manage.py demo`: the whole product on one machine, and Ctrl-C stops all of it.

The demo runs as a real subprocess (tests/demo_process.py), one for this module. The
tests that look at the running demo come first; SIGINT is sent once, by `stopped_demo`.
How the demo fails (tests/test_demo_failures.py) runs demos of its own, in parallel.
"""

from __future__ import annotations

import json
import re
import signal
import stat
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from hotswap_site.settings import DEV_FLEET_KEY
from swaps.engine.seal import Seal

from .chromium import chromium
from .demo_process import (
    IRIS_ROW,
    Demo,
    clean_up,
    demo_command,
    demo_environment,
    start_demo,
    still_running,
    wait_up,
)
from .processes import ROOT, wait_until

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def demo(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo with two replicas and traffic, up and answering."""
    running = start_demo(tmp_path_factory.mktemp("demo"), redis_url, replicas=2)
    try:
        wait_up(running)
        running.children = running.family()
        yield running
    finally:
        clean_up(running)


@pytest.fixture(scope="module")
def stopped_demo(demo: Demo) -> Demo:
    """The same demo after SIGINT, once its process has exited."""
    demo.children = demo.family()
    demo.popen.send_signal(signal.SIGINT)
    demo.popen.wait(timeout=60)
    return demo


def test_console_login_page_answers(demo):
    response = httpx.get(f"{demo.console_url}/accounts/login/", timeout=10)

    assert response.status_code == 200


def test_every_replica_is_ready(demo):
    statuses = [
        httpx.get(f"{url}/v2/health/ready", timeout=10).status_code for url in demo.replica_urls
    ]

    assert statuses == [200, 200]


def test_every_replica_serves_iris_1(demo):
    versions = [
        httpx.post(f"{url}/v2/models/iris/infer", json={"inputs": [IRIS_ROW]}, timeout=10).json()[
            "model_version"
        ]
        for url in demo.replica_urls
    ]

    assert versions == ["1", "1"]


def test_demo_traffic_reaches_every_replica(demo):
    for index in (1, 2):
        before = demo.served(index)
        wait_until(
            lambda index=index, before=before: demo.running() and demo.served(index) > before,
            timeout=60,
            what=f"demo traffic to reach replica {index}",
        )


def test_the_demos_fleet_key_is_its_own_and_only_its_users_to_read(demo):
    # The environment gave the demo no key: it made one, not the laptop default.
    made = demo.fleet_seal()
    laptop_default = Seal([DEV_FLEET_KEY])
    sealed = made.seal("spec", b"field", b"{}")

    assert stat.S_IMODE(demo.env_file().stat().st_mode) == 0o600
    assert laptop_default.open("spec", b"field", sealed) is None


def test_printed_login_logs_in_to_the_console(demo):
    username, password = re.search(r"login +(\w+) / (\S+)", demo.output()).groups()
    with httpx.Client(base_url=demo.console_url, timeout=10) as client:
        client.get("/accounts/login/")
        response = client.post(
            "/accounts/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
        )

    assert (response.status_code, response.headers.get("location")) == (302, "/")


def test_the_banner_names_the_demos_redis(demo):
    assert f"redis     {demo.redis_url}   (namespace {demo.namespace})" in demo.output()


def test_a_command_run_beside_the_demo_reaches_its_fleet_without_being_told(demo):
    where = "from django.conf import settings as s; print(s.REDIS_URL, s.HOTSWAP_NAMESPACE)"

    result = demo_command(demo, "shell", "-c", where)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == [demo.redis_url, demo.namespace]


# What a log of a normal session must never hold: a Python traceback or warning, or a
# log record at WARNING or above.
ALARMING = re.compile(r"Traceback|\w+Warning\b|\b(WARNING|ERROR|CRITICAL)\b")


def test_a_session_watching_a_swap_and_a_rollback_leaves_no_warning_in_any_log(demo):
    logs = sorted(demo.output_path.parent.rglob("*.log"))
    assert len(logs) >= 4, logs  # console, worker and the replicas at least
    before = {path: path.stat().st_size for path in logs}
    username, password = re.search(r"login +(\w+) / (\S+)", demo.output()).groups()
    user = ("--user", username)

    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{demo.console_url}/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{demo.console_url}/")
        served = page.locator("#swap-state-iris [data-served]")

        swap = demo_command(demo, "swap", "iris", "1", "2", "--wait", "120", *user)
        served.and_(page.locator('[data-served="2"]')).wait_for(timeout=60_000)
        # The demo's iris needs a second person to approve a rollback: bob does.
        rollback = demo_command(
            demo, "rollback", "iris", "1", "--reason", "a test", "--json", *user
        )
        request_id = str(json.loads(rollback.stdout)["id"])
        approval = demo_command(demo, "approve_rollback", request_id, "--user", "bob")
        served.and_(page.locator('[data-served="1"]')).wait_for(timeout=60_000)
        page.close()  # the websocket goes with it
    console_log = next(path for path in logs if path.name == "console.log")
    wait_until(
        lambda: "WSDISCONNECT" in console_log.read_text(errors="replace")[before[console_log] :],
        timeout=30,
        what="the console to see the page's websocket close",
    )

    said = {
        command: result.stdout + result.stderr
        for command, result in (("swap", swap), ("rollback", rollback), ("approval", approval))
    }
    assert (swap.returncode, rollback.returncode, approval.returncode) == (0, 0, 0), said
    for path in logs:
        with path.open(errors="replace") as log:
            log.seek(before[path])
            said[path.name] = log.read()
    alarms = {
        where: [line for line in text.splitlines() if ALARMING.search(line)]
        for where, text in said.items()
    }
    assert {where: lines for where, lines in alarms.items() if lines} == {}


def readme_example() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- bring-your-own-model -->", 1)[1].split("<!-- /", 1)[0]
    return block.split("```sh\n", 1)[1].split("```", 1)[0].strip().splitlines()


def test_the_readmes_bring_your_own_model_lines_work_against_the_demo(demo, tmp_path):
    *lines, approval = readme_example()
    # Where this demo's replicas read artifacts (the README's default, run/models, is
    # the checkout's own demo's): artifacts elsewhere are not allowed.
    env = {**demo_environment(demo), "MODELS": str(demo.run_dir / "models" / "mine")}

    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(lines)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "swap" in done.stdout and "completed" in done.stdout
    request_id = re.search(r"rollback request (\d+) of iris to 1", done.stdout).group(1)
    # The README's approval names request 1, the first of a new demo; this demo has others.
    approve = approval.replace("approve_rollback 1 ", f"approve_rollback {request_id} ", 1)
    approved = subprocess.run(
        ["bash", "-c", approve], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert approved.returncode == 0, approved.stdout + approved.stderr
    # An approved rollback answers once every replica serves its target.
    answers = [
        httpx.post(f"{url}/v2/models/iris/infer", json={"inputs": [IRIS_ROW]}).json()
        for url in demo.replica_urls
    ]
    assert [answer["model_version"] for answer in answers] == ["1"] * demo.replicas


def test_sigint_removes_what_it_told_commands(stopped_demo):
    assert not (stopped_demo.output_path.parent / "demo.env").exists()


def test_sigint_exits_with_status_0(stopped_demo):
    assert stopped_demo.popen.returncode == 0


def test_sigint_leaves_no_process_of_the_demo_running(stopped_demo):
    # Console, worker, two replicas and the traffic at least.
    assert len(stopped_demo.children) >= 5
    left = [p for p in stopped_demo.children if still_running(p)]

    assert left == []
