"""The fault suite's judge on made-up records: it must see every kind of damage a
fault can do (a suite whose checks cannot fail proves nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from im.v1 import wire_pb2
from tests.faults.traffic import Conversation, Receiver, Sender, SentMessage, Traffic
from tests.faults.verify import evaluate, live_resumed_after, sends_resumed_after

pytestmark = pytest.mark.faults

NOWHERE = "http://127.0.0.1:9"  # never contacted: the clients here only hold records
CONV = "d:1:2"


@pytest.fixture
async def traffic() -> AsyncIterator[Traffic]:
    traffic = Traffic(NOWHERE)
    sender = Sender(NOWHERE, "s", 2.0, traffic.sent)
    sender.conversation_id = CONV
    traffic.conversations.append(Conversation(CONV, sender, [Receiver(NOWHERE, "r")]))
    yield traffic
    for participant in traffic.participants:
        await participant.close()


def acked(traffic: Traffic, count: int) -> list[SentMessage]:
    """``count`` messages sent at t=1, 2, ... and acked half a second later."""
    messages = []
    for i in range(1, count + 1):
        message = traffic.senders[0].next_message()
        message.first_try, message.acked_at, message.msg_id = float(i), i + 0.5, 1000 + i
        messages.append(message)
    return messages


def stored(message: SentMessage, seq: int, msg_id: int | None = None) -> wire_pb2.Message:
    return wire_pb2.Message(
        msg_id=msg_id or message.msg_id,
        conversation_id=message.conversation_id,
        seq=seq,
        client_msg_id=message.client_msg_id,
        body=message.text.encode(),
    )


def receive(traffic: Traffic, stored_messages: list[wire_pb2.Message], at: float = 9.0) -> None:
    for message in stored_messages:
        traffic.receivers[0].note(message)
        traffic.receivers[0].received[message.msg_id].at = at


async def test_a_clean_run_has_no_problems(traffic: Traffic) -> None:
    messages = acked(traffic, 3)
    history = {CONV: [stored(m, seq) for seq, m in enumerate(messages, 1)]}
    receive(traffic, history[CONV])
    outcome = evaluate("clean", traffic, history, fault_end=1.75)
    assert outcome.problems == []
    assert (outcome.acked, outcome.stored, outcome.delivered, outcome.live) == (3, 3, 3, 3)
    assert sends_resumed_after(traffic, 1.75) == 0.75  # message 2, acked at 2.5
    assert live_resumed_after(traffic, 1.75) == 7.25  # sent at 2.0, received at 9.0


async def test_loss_duplicates_gaps_and_missed_deliveries_are_all_found(traffic: Traffic) -> None:
    one, two, three, four = acked(traffic, 4)
    history = {
        CONV: [
            stored(one, 1),
            stored(two, 2),
            stored(two, 4, msg_id=9999),  # stored twice, the second time under another id
            stored(four, 5),  # three is lost; seq 3 is missing
        ]
    }
    receive(traffic, history[CONV][:2])  # the receiver never got seq 4 and 5
    traffic.receivers[0].note(history[CONV][0])  # shown twice on its screen
    outcome = evaluate("broken", traffic, history, fault_end=0.0)
    assert (outcome.lost, outcome.gaps, outcome.undelivered) == (1, 1, 2)
    assert outcome.duplicated == 2  # one extra stored copy, one repeat on a screen
    text = "\n".join(outcome.problems)
    assert three.client_msg_id in text
    assert "stored more than once" in text
    assert "miss 3" in text
    assert "never got seqs 4, 5" in text
    assert "shown twice" in text


async def test_unacked_sends_and_unexpected_errors_are_problems(traffic: Traffic) -> None:
    (message,) = acked(traffic, 1)
    pending = traffic.senders[0].next_message()  # never acked
    traffic.senders[0].failures["send: FORBIDDEN"] += 1
    history = {CONV: [stored(message, 1)]}
    receive(traffic, history[CONV])
    outcome = evaluate("refused", traffic, history, fault_end=0.0)
    assert outcome.abandoned == 1 and pending.msg_id is None
    assert any("FORBIDDEN" in p for p in outcome.problems)
    assert any("never acknowledged" in p for p in outcome.problems)
