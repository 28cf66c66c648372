"""Guessing a console password is throttled (django-axes).

Before, the login page took any number of attempts. Now, after HOTSWAP_LOGIN_ATTEMPTS
failures for one username from one address, that pair is refused for a while, the
right password included; other users, and the same user elsewhere, are unaffected.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

PASSWORD = "a long passphrase for alice 7"
LOGIN = "/accounts/login/"


@pytest.fixture
def alice_with_password(db) -> User:
    return User.objects.create_user("alice", password=PASSWORD)


def sign_in(client: Client, password: str, *, username: str = "alice"):
    return client.post(LOGIN, {"username": username, "password": password})


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_after_five_failures_even_the_right_password_is_refused(alice_with_password):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(4):
        assert sign_in(client, "guess").status_code == 200  # the form again, with an error
    assert sign_in(client, "guess").status_code == 429  # the fifth locks

    locked = sign_in(client, PASSWORD)

    assert locked.status_code == 429
    assert not signed_in(client)


def test_a_lockout_holds_only_that_username_from_that_address(alice_with_password):
    User.objects.create_user("bob", password=PASSWORD)
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(5):
        sign_in(attacker, "guess")

    alice_elsewhere = Client(REMOTE_ADDR="198.51.100.2")
    bob_there = Client(REMOTE_ADDR="203.0.113.7")

    assert sign_in(alice_elsewhere, PASSWORD).status_code == 302
    assert sign_in(bob_there, PASSWORD, username="bob").status_code == 302


def test_a_forwarded_for_header_does_not_buy_fresh_attempts(alice_with_password):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for attempt in range(5):
        client.post(
            LOGIN,
            {"username": "alice", "password": "guess"},
            HTTP_X_FORWARDED_FOR=f"10.0.0.{attempt}",
        )

    assert sign_in(client, PASSWORD).status_code == 429


def test_a_success_before_the_limit_starts_the_count_again(alice_with_password):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(4):
        sign_in(client, "guess")
    assert sign_in(client, PASSWORD).status_code == 302
    client.logout()
    for _ in range(4):
        sign_in(client, "guess")

    assert sign_in(client, PASSWORD).status_code == 302
