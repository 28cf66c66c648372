from __future__ import annotations

import pytest
from django.core.checks import run_checks

MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
REDIS_LAYER = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]},
    }
}


@pytest.fixture(autouse=True)
def production_channel_layer(settings):
    """Tests run on the in-memory layer (E001 with DEBUG off) and a test Redis with no
    password (W001); checks start from a production-like Redis."""
    settings.CHANNEL_LAYERS = REDIS_LAYER
    settings.REDIS_URL = "redis://:fleet-password@127.0.0.1:6379/0"


def swaps_check_ids() -> list[str]:
    return [message.id for message in run_checks() if message.id.startswith("swaps.")]


def test_memory_channel_layer_with_debug_off_is_an_error(settings):
    settings.DEBUG = False
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    assert swaps_check_ids() == ["swaps.E001"]


def test_memory_channel_layer_with_debug_on_is_allowed(settings):
    settings.DEBUG = True
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    assert swaps_check_ids() == []


def test_redis_channel_layer_with_debug_off_passes(settings):
    settings.DEBUG = False
    settings.CHANNEL_LAYERS = REDIS_LAYER
    assert swaps_check_ids() == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379/0", "127.0.0.1:6379", "redis://", "", "memcached://h:11211"]
)
def test_redis_url_that_is_not_redis_is_an_error(settings, url):
    settings.REDIS_URL = url
    assert [i for i in swaps_check_ids() if i.startswith("swaps.E")] == ["swaps.E002"]


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pw@127.0.0.1:6379/0",
        "rediss://:pw@cache.example.com:6380/1",
        "unix:///run/redis.sock",
    ],
)
def test_redis_tls_and_socket_urls_pass(settings, url):
    settings.REDIS_URL = url
    assert swaps_check_ids() == []


@pytest.mark.parametrize("url", ["redis://cache:6379/0", "rediss://user@cache:6380/0"])
def test_a_redis_without_a_password_is_a_warning_in_production(settings, url):
    settings.DEBUG = False
    settings.REDIS_URL = url
    assert "swaps.W001" in swaps_check_ids()


@pytest.mark.parametrize(
    "debug, url",
    [
        (True, "redis://cache:6379/0"),
        (False, "redis://:s3cret@cache:6379/0"),
        (False, "unix:///run/redis.sock"),
    ],
)
def test_a_redis_password_or_debug_or_a_socket_is_no_warning(settings, debug, url):
    settings.DEBUG = debug
    settings.REDIS_URL = url
    assert "swaps.W001" not in swaps_check_ids()


def test_redis_url_error_hides_the_password(settings):
    settings.REDIS_URL = "http://:hunter2@cache.example.com:6379/0"
    [error] = [m for m in run_checks() if m.id == "swaps.E002"]
    assert "hunter2" not in error.msg


def test_heartbeat_ttl_not_longer_than_interval_is_an_error(settings):
    settings.HOTSWAP_HEARTBEAT_INTERVAL = 2.0
    settings.HOTSWAP_HEARTBEAT_TTL = 2.0
    assert swaps_check_ids() == ["swaps.E003"]


def test_heartbeat_ttl_longer_than_interval_passes(settings):
    settings.HOTSWAP_HEARTBEAT_INTERVAL = 0.5
    settings.HOTSWAP_HEARTBEAT_TTL = 3.0
    assert swaps_check_ids() == []
