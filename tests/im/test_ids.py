"""Message ids (time-ordered, unique), conversation ids, typeable tokens."""

from __future__ import annotations

import pytest

from im import ids as im_ids
from im.clock import FakeClock
from im.ids import (
    EPOCH_MS,
    MsgIdGenerator,
    direct_conversation_id,
    group_conversation_id,
    is_valid_conversation_id,
    parse_direct,
)


def test_ids_strictly_increase_within_and_across_milliseconds() -> None:
    clock = FakeClock()
    ids = MsgIdGenerator(node_id=5, clock=clock)
    seen: list[int] = []
    for step in range(20):
        # 10,000 ids in one ms overflows the 12-bit sequence: it borrows the next ms.
        seen += [ids.next_id() for _ in range(10_000 if step == 3 else 50)]
        clock.advance(0.001)
    assert seen == sorted(set(seen))  # strictly increasing, hence unique
    assert all(0 < i < 1 << 63 for i in seen)


def test_ids_stay_monotonic_when_the_clock_goes_back() -> None:
    clock = FakeClock()
    ids = MsgIdGenerator(node_id=1, clock=clock)
    before = [ids.next_id() for _ in range(10)]
    clock.advance(-5.0)
    after = [ids.next_id() for _ in range(10)]
    assert before[-1] < after[0]
    assert after == sorted(set(after))


def test_id_layout_carries_time_and_node() -> None:
    clock = FakeClock()
    generated = MsgIdGenerator(node_id=1023, clock=clock).next_id()
    assert generated >> 22 == clock.wall_ms() - EPOCH_MS
    assert (generated >> 12) & 0x3FF == 1023


def test_two_nodes_never_collide_in_the_same_millisecond() -> None:
    clock = FakeClock()
    a, b = MsgIdGenerator(1, clock), MsgIdGenerator(2, clock)
    assert {a.next_id() for _ in range(100)}.isdisjoint({b.next_id() for _ in range(100)})


@pytest.mark.parametrize("node_id", [-1, 1024])
def test_node_id_must_fit_ten_bits(node_id: int) -> None:
    with pytest.raises(ValueError):
        MsgIdGenerator(node_id)


def test_generator_follows_a_lease_that_moves() -> None:
    from im.ports import NodeLease

    clock = FakeClock()
    lease = NodeLease(7, "connector-a")
    ids = MsgIdGenerator(0, clock)
    ids.follow(lease)
    assert (ids.next_id() >> 12) & 0x3FF == 7
    lease.move_to(9)  # the registry lost the session and 7 was taken meanwhile
    assert (ids.next_id() >> 12) & 0x3FF == 9


def test_direct_id_is_symmetric_and_parses_back() -> None:
    assert direct_conversation_id(9, 3) == direct_conversation_id(3, 9) == "d:3:9"
    assert parse_direct("d:3:9") == (3, 9)
    with pytest.raises(ValueError):
        direct_conversation_id(4, 4)


@pytest.mark.parametrize(
    "conversation_id",
    [
        "d:9:3",  # not ordered
        "d:3:3",  # same user twice
        "d:0:3",
        "d:-1:3",
        "d:3",
        "d:1:2:3",
        "d:a:b",
        "d:01:2",  # non-canonical spellings would alias d:1:2
        "d:+1:2",
        "d: 1:2",
        "d:1_0:20",
        "g:12",
        "",
    ],
)
def test_parse_direct_rejects_anything_but_the_canonical_form(conversation_id: str) -> None:
    assert parse_direct(conversation_id) is None


@pytest.mark.parametrize(
    ("conversation_id", "valid"),
    [
        ("d:1:2", True),
        (group_conversation_id(123456789), True),
        ("g:" + "9" * 20, True),
        ("g:" + "9" * 21, False),
        ("g:", False),
        ("g:12a", False),
        ("g:-5", False),
        ("g:\u00b2", False),  # a Unicode digit is not an ASCII id
        ("d:2:1", False),
        ("x:1", False),
        ("", False),
    ],
)
def test_is_valid_conversation_id(conversation_id: str, valid: bool) -> None:
    assert is_valid_conversation_id(conversation_id) is valid


def test_a_typeable_token_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter(["-looks-like-an-option", "-again", "fine-token"])
    monkeypatch.setattr(im_ids.secrets, "token_urlsafe", lambda nbytes: next(drawn))
    assert im_ids.typeable_token(16) == "fine-token"
    monkeypatch.undo()
    tokens = {im_ids.typeable_token(3) for _ in range(2000)}  # 4 characters: 1 in 64 with "-"
    assert not any(t.startswith("-") for t in tokens) and len(tokens) > 1900
