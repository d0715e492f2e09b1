"""One message's trace through a whole suite (in-memory exporter): the Send's span at
the connector, the router's span (its traceparent came in the bus record) and the
connector's Deliver span (its traceparent came in the Delivery) form one trace; the
login before it is a trace of the gateway's request and the user service's call."""

from __future__ import annotations

import asyncio

from im.client.gateway import GatewayClient
from im.client.session import ImClient
from tests.services.conftest import SecureSuite

PASSWORD = "correct-horse-1"


async def test_a_message_is_one_trace_from_send_to_deliver(
    secure_suite: SecureSuite,
    recorded_spans,  # type: ignore[no-untyped-def]
) -> None:
    ca = str(secure_suite.public.ca)
    async with GatewayClient(secure_suite.gateway, ca_file=ca) as gw:
        await gw.register("alice", PASSWORD)
        await gw.register("bob", PASSWORD)
    async with (
        ImClient(secure_suite.gateway, ca_file=ca) as alice,
        ImClient(secure_suite.gateway, ca_file=ca) as bob,
    ):
        await alice.login("alice", PASSWORD, "phone")
        await bob.login("bob", PASSWORD, "phone")
        await alice.connect()
        await bob.connect()
        ack = await alice.send_to_user("bob", "traced hello")
        async with asyncio.timeout(10):
            async for message in bob.messages():
                assert message.body == b"traced hello"
                break
    # (The Deliver span ends before the connector's write reaches Bob's socket.)
    spans = recorded_spans.get_finished_spans()

    # The gateway's login: the HTTP span and the user service's call in one trace.
    login = next(s for s in spans if s.name == "POST /v1/auth/login")
    authenticate = next(
        s
        for s in spans
        if s.name == "im.v1.UserService/Authenticate"
        and s.context.trace_id == login.context.trace_id
    )
    assert authenticate.parent is not None and authenticate.parent.span_id == login.context.span_id

    # The message: connector send -> router route -> connector deliver.
    msg_id = ack.msg_id
    send = next(
        s for s in spans if s.name == "connector send" and s.attributes["im.msg_id"] == msg_id
    )
    assert send.parent is None  # where the message enters the suite
    assert send.status.is_ok
    route = next(
        s for s in spans if s.name == "router route" and s.attributes["im.msg_id"] == msg_id
    )
    assert route.context.trace_id == send.context.trace_id
    assert route.parent is not None and route.parent.span_id == send.context.span_id
    assert route.attributes["im.seq"] == 1
    delivers = [
        s for s in spans if s.name == "connector deliver" and s.attributes["im.msg_id"] == msg_id
    ]
    assert delivers
    for deliver in delivers:
        assert deliver.context.trace_id == send.context.trace_id
        assert deliver.parent is not None and deliver.parent.span_id == route.context.span_id
    # Bob's phone and Alice's own (that is how it learns the seq).
    assert sum(d.attributes["im.pushed"] for d in delivers) == 2
