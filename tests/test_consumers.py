"""The console's websocket: who may connect, and what reaches them."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from hotswap_site.asgi import application
from swaps import broadcast, swapping
from swaps.models import Swap

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost")


def session_cookie(user) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


def communicator(path: str, *headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=[(b"host", b"localhost"), *headers])


async def watching(path: str, user) -> WebsocketCommunicator:
    """A signed-in socket, connected, past the snapshot it is sent on connecting."""
    socket = communicator(path, ORIGIN, await sync_to_async(session_cookie)(user))
    connected, _ = await socket.connect()
    assert connected
    await fragment_with(socket, "swap-state-iris")
    return socket


async def fragment_with(socket: WebsocketCommunicator, element_id: str) -> str:
    """The first frame that carries `element_id` (live counts may come first)."""
    while True:
        frame = await socket.receive_from(timeout=10)
        if f'id="{element_id}"' in frame:
            return frame


async def test_an_anonymous_websocket_is_refused(iris):
    socket = communicator("/ws/dashboard/", ORIGIN)

    connected, _ = await socket.connect()

    assert connected is False


async def test_a_signed_in_websocket_from_a_foreign_origin_is_refused(alice, iris):
    cookie = await sync_to_async(session_cookie)(alice)
    socket = communicator("/ws/dashboard/", (b"origin", b"https://evil.example"), cookie)

    connected, _ = await socket.connect()

    assert connected is False


@pytest.mark.parametrize(
    "origin",
    [
        b"http://localhost:9999",
        b"https://localhost:8443",
        b"http://localhost.evil.example",
        b"null",
    ],
)
async def test_a_websocket_from_another_port_of_the_same_host_is_refused(alice, iris, origin):
    # Before, any Origin naming an allowed host passed, whatever its port.
    cookie = await sync_to_async(session_cookie)(alice)
    socket = communicator("/ws/dashboard/", (b"origin", origin), cookie)

    connected, _ = await socket.connect()

    assert connected is False


async def test_a_websocket_from_a_trusted_origin_is_accepted(alice, iris, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://console.example.com"]
    settings.ALLOWED_HOSTS = ["localhost"]
    cookie = await sync_to_async(session_cookie)(alice)
    socket = communicator("/ws/models/iris/", (b"origin", b"https://console.example.com"), cookie)

    connected, _ = await socket.connect()

    assert connected is True
    await socket.disconnect()


async def test_a_signed_in_websocket_is_accepted(alice, iris):
    socket = communicator("/ws/models/iris/", ORIGIN, await sync_to_async(session_cookie)(alice))

    connected, _ = await socket.connect()

    assert connected is True
    await socket.disconnect()


async def test_a_model_socket_is_sent_the_current_state_and_versions_on_connecting(
    alice, candidate_version
):
    socket = communicator("/ws/models/iris/", ORIGIN, await sync_to_async(session_cookie)(alice))
    await socket.connect()

    frame = await fragment_with(socket, "swap-state-iris")

    assert 'data-state="idle"' in frame and 'id="versions-iris"' in frame
    await socket.disconnect()


async def test_a_dashboard_socket_is_sent_the_current_state_on_connecting(alice, iris):
    socket = communicator("/ws/dashboard/", ORIGIN, await sync_to_async(session_cookie)(alice))
    await socket.connect()

    frame = await fragment_with(socket, "swap-state-iris")

    assert 'id="latest-swaps"' in frame
    await socket.disconnect()


async def test_an_approvals_socket_is_sent_the_queue_alone_on_connecting(alice, iris):
    socket = communicator("/ws/approvals/", ORIGIN, await sync_to_async(session_cookie)(alice))
    connected, _ = await socket.connect()

    frame = await socket.receive_from()
    await socket.disconnect()
    assert connected
    assert 'id="approvals"' in frame and "swap-state" not in frame


async def test_what_a_socket_sends_changes_nothing(mallory, candidate_version):
    socket = await watching("/ws/models/iris/", mallory)

    await socket.send_to(text_data='{"to_version": "2", "from_version": "1"}')
    await socket.send_to(text_data="<form hx-post='/models/iris/swap'></form>")

    assert await socket.receive_nothing(timeout=0.5)
    assert not await Swap.objects.aexists()
    await socket.disconnect()


async def test_the_model_socket_receives_the_swap_state_fragment_when_a_swap_changes(
    alice, candidate_version
):
    socket = await watching("/ws/models/iris/", alice)

    # Announced on commit; this process's live task renders it for the socket.
    await sync_to_async(swapping.start_swap)(
        model="iris", from_version="1", to_version="2", user=alice, via="test"
    )

    frame = await fragment_with(socket, "swap-state-iris")
    assert 'data-state="pending"' in frame
    await socket.disconnect()


async def test_the_dashboard_socket_receives_the_swap_state_fragment_when_a_swap_changes(
    alice, candidate_version
):
    socket = await watching("/ws/dashboard/", alice)

    # Announced on commit; this process's live task renders it for the socket.
    await sync_to_async(swapping.start_swap)(
        model="iris", from_version="1", to_version="2", user=alice, via="test"
    )

    assert "Pending" in await fragment_with(socket, "swap-state-iris")
    await socket.disconnect()


async def test_a_closed_socket_is_sent_nothing_more(alice, iris):
    socket = await watching("/ws/models/iris/", alice)
    assert broadcast.watchers.watched("iris")

    await socket.disconnect()

    assert not broadcast.watchers.watched("iris")
