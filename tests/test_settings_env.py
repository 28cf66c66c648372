from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from hotswap_site.env import (
    env_bool,
    env_choice,
    env_database,
    env_int,
    env_key_prefix,
    env_list,
    env_required,
    env_seconds,
    env_str,
)


def test_unset_variable_gives_the_default():
    assert env_int("HOTSWAP_X", default=7, environ={}) == 7


def test_empty_variable_gives_the_default():
    assert env_seconds("HOTSWAP_X", default=1.5, environ={"HOTSWAP_X": "  "}) == 1.5


def test_str_returns_the_value():
    assert env_str("REDIS_URL", default="x", environ={"REDIS_URL": "redis://h:1/0"}) == (
        "redis://h:1/0"
    )


def test_required_returns_the_value():
    assert env_required("SECRET_KEY", environ={"SECRET_KEY": "s3cret"}) == "s3cret"


def test_required_unset_names_the_variable_and_reason():
    with pytest.raises(ImproperlyConfigured, match=r"^SECRET_KEY must be set when DEBUG is off$"):
        env_required("SECRET_KEY", reason="when DEBUG is off", environ={})


@pytest.mark.parametrize("word", ["1", "true", "True", "YES", "on"])
def test_bool_true_words(word):
    assert env_bool("DEBUG", default=False, environ={"DEBUG": word}) is True


@pytest.mark.parametrize("word", ["0", "false", "False", "no", "OFF"])
def test_bool_false_words(word):
    assert env_bool("DEBUG", default=True, environ={"DEBUG": word}) is False


def test_bool_rejects_other_words():
    with pytest.raises(ImproperlyConfigured, match=r"^DEBUG must be one of .* got 'maybe'$"):
        env_bool("DEBUG", default=True, environ={"DEBUG": "maybe"})


def test_int_parses_whole_numbers():
    assert env_int("N", default=0, environ={"N": "8_388_608"}) == 8_388_608


def test_int_rejects_text():
    with pytest.raises(
        ImproperlyConfigured, match=r"^HOTSWAP_MAX_BODY_BYTES must be a whole number, got '8M'$"
    ):
        env_int("HOTSWAP_MAX_BODY_BYTES", default=1, environ={"HOTSWAP_MAX_BODY_BYTES": "8M"})


def test_int_rejects_values_below_minimum():
    with pytest.raises(ImproperlyConfigured, match=r"^N must be at least 1, got '0'$"):
        env_int("N", default=5, minimum=1, environ={"N": "0"})


def test_seconds_accepts_fractions():
    assert env_seconds("T", default=1.0, environ={"T": "0.25"}) == 0.25


def test_seconds_rejects_text():
    with pytest.raises(
        ImproperlyConfigured,
        match=r"^HOTSWAP_DRAIN_TIMEOUT must be a number of seconds, got 'abc'$",
    ):
        env_seconds("HOTSWAP_DRAIN_TIMEOUT", default=30.0, environ={"HOTSWAP_DRAIN_TIMEOUT": "abc"})


def test_seconds_rejects_a_unit_suffix():
    with pytest.raises(ImproperlyConfigured, match="must be a number of seconds, got '30s'"):
        env_seconds("T", default=1.0, environ={"T": "30s"})


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "0"])
def test_seconds_must_be_positive_and_finite(value):
    with pytest.raises(
        ImproperlyConfigured, match=rf"^T must be more than zero seconds, got '{value}'$"
    ):
        env_seconds("T", default=1.0, environ={"T": value})


def test_seconds_accepts_zero_when_allowed():
    assert env_seconds("T", default=1.0, allow_zero=True, environ={"T": "0"}) == 0.0


def test_seconds_rejects_negative_even_when_zero_allowed():
    with pytest.raises(ImproperlyConfigured, match=r"^T must be zero or more seconds, got '-2'$"):
        env_seconds("T", default=1.0, allow_zero=True, environ={"T": "-2"})


def test_list_splits_on_commas_and_drops_blanks():
    environ = {"ALLOWED_HOSTS": " a.example.com, ,b.example.com ,"}
    assert env_list("ALLOWED_HOSTS", environ=environ) == ["a.example.com", "b.example.com"]


def test_list_unset_gives_the_default():
    assert env_list("ALLOWED_HOSTS", default=["localhost"], environ={}) == ["localhost"]


def test_choice_is_case_insensitive_and_returns_the_canonical_spelling():
    assert env_choice("L", choices=["DEBUG", "INFO"], default="INFO", environ={"L": "debug"}) == (
        "DEBUG"
    )


def test_choice_rejects_unknown_values():
    with pytest.raises(
        ImproperlyConfigured, match=r"^CHANNEL_LAYER must be one of redis, memory, got 'rabbit'$"
    ):
        env_choice(
            "CHANNEL_LAYER",
            choices=["redis", "memory"],
            default="redis",
            environ={"CHANNEL_LAYER": "rabbit"},
        )


def test_key_prefix_accepts_plain_names():
    assert env_key_prefix("NS", default="x", environ={"NS": "prod-eu:hotswap_1.2"}) == (
        "prod-eu:hotswap_1.2"
    )


@pytest.mark.parametrize("value", ["hot*", "a b", "x?", "[ab]"])
def test_key_prefix_rejects_glob_and_space_characters(value):
    with pytest.raises(ImproperlyConfigured, match=r"^HOTSWAP_NAMESPACE may contain only"):
        env_key_prefix("HOTSWAP_NAMESPACE", default="hotswap", environ={"HOTSWAP_NAMESPACE": value})


def test_database_parses_postgres_urls():
    config = env_database(
        "DATABASE_URL",
        default="sqlite:///x",
        environ={"DATABASE_URL": "postgres://app@db.internal:5433/hotswap"},
    )
    assert (config["ENGINE"], config["HOST"], config["PORT"], config["NAME"]) == (
        "django.db.backends.postgresql",
        "db.internal",
        5433,
        "hotswap",
    )


def test_database_unset_gives_the_default():
    config = env_database("DATABASE_URL", default="sqlite:////tmp/hotswap.db", environ={})
    assert config["NAME"] == "/tmp/hotswap.db"


def test_database_rejects_unknown_schemes_without_echoing_the_url():
    with pytest.raises(ImproperlyConfigured, match=r"^DATABASE_URL is not a database URL") as info:
        env_database(
            "DATABASE_URL", default="sqlite:///x", environ={"DATABASE_URL": "pg://u:hunter2@h/db"}
        )
    assert "hunter2" not in str(info.value)
