"""The console's pages carry a Content-Security-Policy that runs only its own scripts."""

from __future__ import annotations

import re

from .control_plane import client_for


def policy_of(response) -> dict[str, str]:
    directives = (
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    return {name: value for name, value in directives}


def test_a_console_page_runs_only_the_consoles_own_scripts(mallory, iris):
    response = client_for(mallory).get("/")

    policy = policy_of(response)
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"  # its websocket, and nowhere else
    assert policy["frame-ancestors"] == "'none'"
    # The viewer's style (what mallory may not use is hidden) is the one inline element,
    # allowed by this response's nonce alone.
    (nonce,) = re.findall(r"'nonce-([\w-]+)'", policy["style-src"])
    assert f'<style id="viewer-style" nonce="{nonce}">' in response.text


def test_each_response_has_a_nonce_of_its_own(mallory, iris):
    client = client_for(mallory)

    first, second = (policy_of(client.get("/"))["style-src"] for _ in range(2))

    assert first != second


def test_the_login_page_carries_the_policy_too(client):
    assert policy_of(client.get("/accounts/login/"))["default-src"] == "'self'"
