"""A port that cannot be had is one line naming the setting that moves it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from im.config import Settings
from im.grpcutil import GrpcServer
from im.listeners import ListenError, bind_failure, check_ports

FREE = {
    "user_grpc_port": 0,
    "group_grpc_port": 0,
    "connector_grpc_port": 0,
    "router_grpc_port": 0,
    "gateway_grpc_port": 0,
    "connector_tcp_port": 0,
    "connector_ws_port": 0,
    "gateway_port": 0,
}


@pytest.fixture
def taken() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_taken_port_names_its_setting(taken: int) -> None:
    settings = Settings(**{**FREE, "gateway_port": taken})
    with pytest.raises(ListenError) as caught:
        check_ports(settings, ["user", "group", "connector", "router", "gateway"])
    text = str(caught.value)
    assert text == (
        f"cannot listen on 127.0.0.1:{taken} for the gateway HTTP: the port is already in "
        f"use; set IM_GATEWAY_PORT to a free port (e.g. IM_GATEWAY_PORT={taken + 1}) or stop "
        "what uses it"
    )
    assert "\n" not in text and caught.value.in_use


def test_only_the_ports_of_the_services_asked_for_are_checked(taken: int) -> None:
    settings = Settings(**{**FREE, "connector_ws_port": taken})
    check_ports(settings, ["gateway", "user"])  # no connector here
    with pytest.raises(ListenError, match="IM_CONNECTOR_WS_PORT"):
        check_ports(settings, ["connector"])


def test_one_port_given_twice_is_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(**{**FREE, "gateway_port": port, "connector_tcp_port": port})
    with pytest.raises(ListenError) as caught:
        check_ports(settings, ["connector", "gateway"])
    assert "IM_CONNECTOR_TCP_PORT (connector TCP) is" in str(caught.value)
    assert "IM_GATEWAY_PORT" in str(caught.value)


def test_other_bind_errors_say_what_went_wrong() -> None:
    error = ListenError(
        "gateway HTTP", "10.9.9.9", 80, "gateway_port", OSError(99, "Cannot assign")
    )
    assert not error.in_use
    assert str(error) == (
        "cannot listen on 10.9.9.9:80 for the gateway HTTP: Cannot assign; check "
        "IM_GATEWAY_PORT and the host it binds to"
    )


def test_bind_failure_finds_out_why(taken: int) -> None:
    error = bind_failure("user_grpc_port", "127.0.0.1", taken)
    assert error.in_use and error.what == "user gRPC" and "IM_USER_GRPC_PORT" in str(error)


async def test_a_grpc_server_on_a_taken_port_raises_a_listen_error(taken: int) -> None:
    settings = Settings(internal_insecure=True, router_grpc_port=taken)
    server = GrpcServer.for_settings(settings, "router_grpc_port")
    with pytest.raises(ListenError, match="IM_ROUTER_GRPC_PORT"):
        await server.start()
