"""After a chat, every service's metrics show it: in standalone all of them on the
gateway's /metrics, in distributed mode each process on its own metrics port."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families

from im.client import ImClient
from im.client.connection import Connection
from im.v1 import wire_pb2
from tests.e2e.conftest import Target
from tests.e2e.helpers import PASSWORD, new_user, take_messages

Samples = dict[str, list[tuple[dict[str, str], float]]]

# Every name the operations docs promise, with the samples that must be non-zero after
# the chat below (a label filter, or None: the family only has to be there).
MOVED: dict[str, dict[str, str] | None] = {
    "im_connector_connections": {"authed": "true"},
    "im_connector_frames_total": {"direction": "in", "kind": "send"},
    "im_connector_send_ack_seconds_count": {},
    "im_connector_deliveries_total": {},
    "im_connector_retransmits_total": {},
    "im_connector_kicks_total": {"reason": "device_logged_in_elsewhere"},
    "im_connector_outbox_bytes": None,  # a momentary figure: usually 0 by now
    "im_router_records_total": {"outcome": "stored"},
    "im_router_batch_size_count": {},
    "im_router_store_seconds_count": {},
    "im_router_delivery_seconds_count": {},
    "im_router_consumer_lag": None,
    "im_router_seq_conflicts_total": None,
    "im_grpc_server_handled_total": {"grpc_service": "im.v1.UserService", "grpc_code": "OK"},
    "im_grpc_server_handling_seconds_count": {"grpc_service": "im.v1.GroupService"},
    "im_gateway_http_requests_total": {"route": "/v1/auth/login"},
    "process_cpu_seconds_total": {},
    "python_info": {},
}


def metrics_urls(target: Target) -> list[str]:
    if target.cluster is None:
        return [f"{target.gateway}/metrics"]
    urls = []
    for proc in target.cluster.procs.values():  # type: ignore[attr-defined]
        setting = "IM_GATEWAY_METRICS_PORT" if proc.service == "gateway" else "IM_METRICS_PORT"
        urls.append(f"http://127.0.0.1:{proc.env[setting]}/metrics")
    return urls


async def scrape(target: Target) -> Samples:
    """Every process's samples, together (a name's samples from all of them)."""
    samples: Samples = defaultdict(list)
    async with httpx.AsyncClient(timeout=10) as http:
        for url in metrics_urls(target):
            reply = await http.get(url)
            assert reply.status_code == 200, url
            for family in text_string_to_metric_families(reply.text):
                for sample in family.samples:
                    samples[sample.name].append((sample.labels, sample.value))
    return samples


def total(samples: Samples, name: str, labels: dict[str, str]) -> float:
    return sum(v for found, v in samples[name] if labels.items() <= found.items())


async def wait_for(condition, what: str, within: float = 20) -> None:  # type: ignore[no-untyped-def]
    """Until the suite did something (never to prove it did not)."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.05)


async def test_a_chat_shows_in_every_metric(target: Target) -> None:
    alice = await new_user(target.gateway, "alice")
    bob = await new_user(target.gateway, "bob")
    # A device of bob's that never acks: its deliveries are resent.
    quiet = ImClient(target.gateway)
    await quiet.login(bob.username, PASSWORD, "quiet")  # type: ignore[attr-defined]
    login = quiet.login_result
    silent = await Connection.open(login.connector.tcp, login.access_token, auto_ack=False)
    try:
        await alice.connect()
        await bob.connect()
        await alice.send_to_user(bob.username, "hello")  # type: ignore[attr-defined]
        (message,) = await take_messages(bob, 1)
        await bob.read(message.conversation_id, message.seq)
        await wait_for(lambda: silent.duplicates >= 1, "a resend to the device that never acks")
        samples = await scrape(target)  # while everyone is connected
        # The same device connects again: the silent connection is kicked.
        again = await Connection.open(login.connector.tcp, login.access_token)
        await asyncio.wait_for(silent.wait_closed(), 10)
        assert silent.kick is not None
        assert silent.kick.reason == wire_pb2.KICK_REASON_DEVICE_LOGGED_IN_ELSEWHERE
        await again.close()
        kicks = await scrape(target)
    finally:
        for client in (alice, bob, quiet):
            await client.close()
        await silent.close()

    samples["im_connector_kicks_total"] = kicks["im_connector_kicks_total"]
    missing = [name for name in MOVED if name not in samples]
    assert not missing, f"not exported: {missing}"
    still = [
        name
        for name, labels in MOVED.items()
        if labels is not None and total(samples, name, labels) <= 0
    ]
    assert not still, f"did not move with the chat: {still}"
