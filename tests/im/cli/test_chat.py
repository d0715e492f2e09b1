"""imctl chat: what the screen shows and what is sent, on a scripted client (the whole
command against a real suite, restart included, is in tests/e2e/test_cli.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pytest

from im import events
from im.cli.chat import HINT, Chat, Room, offline_note
from im.cli.common import UserNames
from im.client.errors import ConnectionClosed, SendError
from im.client.gateway import HistoryPage
from im.client.reconnect import Reconnected, Reconnecting
from im.v1 import wire_pb2

ROOM = "d:1:2"
# Today at 09:30:15: the chat shows a time of today without its date.
TS = int(datetime.now().replace(hour=9, minute=30, second=15, microsecond=0).timestamp() * 1000)
T = datetime.fromtimestamp(TS / 1000).strftime("%H:%M:%S")


def msg(seq: int, sender: int, text: str, cid: str = ROOM) -> wire_pb2.Message:
    return wire_pb2.Message(
        msg_id=1000 + seq,
        conversation_id=cid,
        seq=seq,
        sender_id=sender,
        content_type="text/plain",
        body=text.encode(),
        server_ts=TS,
    )


class FakeGateway:
    def __init__(self, history: list[wire_pb2.Message]) -> None:
        self.stored = history
        self.reads: list[tuple[str, int]] = []

    async def history(self, cid: str, after_seq: int = 0, limit: int = 100) -> HistoryPage:
        found = [m for m in self.stored if m.conversation_id == cid and m.seq > after_seq]
        return HistoryPage(found[:limit], len(found) > limit)

    async def read(self, cid: str, seq: int) -> None:
        self.reads.append((cid, seq))

    async def user(self, user_id: int) -> dict[str, Any]:
        return {"user_id": user_id, "username": {1: "alice", 2: "bob", 3: "carol"}[user_id]}


class FakeClient:
    """What Chat uses of ImClient: events from a queue, sends as scripted."""

    def __init__(self, history: list[wire_pb2.Message] | None = None) -> None:
        self.user_id = 1
        self.gateway = FakeGateway(history or [])
        self.events_queue: asyncio.Queue[object] = asyncio.Queue()
        self.sent: list[tuple[str, str, str]] = []
        self.read_frames: list[tuple[str, int]] = []
        self.followed: list[tuple[str, int]] = []
        self.send_failures: list[Exception] = []
        self.tried = asyncio.Event()  # set by every send
        self.connected = True
        self.close_reason: str | None = None
        self.presence: list[dict[str, Any]] = []
        self.typing_sent: list[str] = []

    async def connect(self, sync: bool = True) -> None:
        assert sync is False

    def follow(self, cid: str, seq: int) -> None:
        self.followed.append((cid, seq))

    async def send(self, cid: str, text: str, client_msg_id: str = "") -> None:
        self.sent.append((cid, text, client_msg_id))
        self.tried.set()
        if self.send_failures:
            raise self.send_failures.pop(0)

    async def read(self, cid: str, seq: int) -> None:
        self.read_frames.append((cid, seq))

    async def conversation_presence(self, cid: str) -> list[dict[str, Any]]:
        return list(self.presence)

    async def send_typing(self, cid: str, started: bool = True) -> None:
        self.typing_sent.append(cid)

    async def events(self) -> AsyncIterator[object]:
        while (event := await self.events_queue.get()) is not None:
            yield event


class FakeScreen:
    def __init__(self, typed: list[str] | None = None) -> None:
        self.shown: list[str] = []
        self.typed: asyncio.Queue[str | None] = asyncio.Queue()
        for line in typed or []:
            self.typed.put_nowait(line)

    def show(self, line: str) -> None:
        self.shown.append(line)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        yield

    async def lines(self) -> AsyncIterator[str]:
        while (line := await self.typed.get()) is not None:
            yield line


def make_chat(
    client: FakeClient, screen: FakeScreen, *, kind: str = "direct", last_seq: int = 0
) -> Chat:
    names = UserNames(client)  # type: ignore[arg-type]
    room = Room(ROOM, "@bob", kind, last_seq, 0, {"g:7": "team"})
    return Chat(client, room, names, screen)  # type: ignore[arg-type]


async def test_opening_shows_the_last_messages_and_marks_them_read() -> None:
    client = FakeClient([msg(seq, 2 if seq % 2 else 1, f"m{seq}") for seq in range(1, 26)])
    screen = FakeScreen()
    await make_chat(client, screen, last_seq=25).opening()
    assert screen.shown[0] == "chat in @bob (d:1:2), as alice"
    assert screen.shown[1] == f"[{T}] #6 alice: m6"
    assert screen.shown[20] == f"[{T}] #25 bob: m25"
    assert screen.shown[21] == "(earlier messages: /history N; 25 in all)"
    assert screen.shown[-1] == HINT
    assert client.gateway.reads == [(ROOM, 25)]
    assert client.followed == [(ROOM, 25)]  # live messages after a gap pull it


async def test_each_message_once_with_its_seq_own_lines_included() -> None:
    client = FakeClient([msg(1, 2, "hi")])
    screen = FakeScreen()
    chat = make_chat(client, screen, last_seq=1)
    await chat.opening()
    screen.shown.clear()
    for event in (
        msg(1, 2, "hi"),  # already shown from history
        msg(2, 1, "my own line"),  # comes back from the suite with its seq
        msg(3, 2, "an answer"),
        msg(4, 3, "elsewhere", cid="g:7"),
        wire_pb2.Receipt(conversation_id=ROOM, reader_id=2, read_seq=2),
        wire_pb2.Receipt(conversation_id=ROOM, reader_id=1, read_seq=3),  # mine: not shown
    ):
        client.events_queue.put_nowait(event)
    client.events_queue.put_nowait(None)
    await chat.show_events()
    assert screen.shown == [
        f"[{T}] #2 alice: my own line",
        f"[{T}] #3 bob: an answer",
        f"[{T}] [team #4] carol: elsewhere",
        "  (bob read up to #2)",
    ]
    assert client.read_frames == [(ROOM, 3)]  # others' lines in this room only


async def test_a_line_typed_while_offline_goes_out_once_back_under_one_id() -> None:
    client = FakeClient()
    screen = FakeScreen()
    chat = make_chat(client, screen)
    chat.online.set()
    client.send_failures = [ConnectionClosed("kicked: RECONNECT")]
    client.connected = False
    sending = asyncio.create_task(chat.send("hello"))
    await asyncio.wait_for(client.tried.wait(), 3)
    # the failed try is handled in the same step: it now waits for the connection
    assert len(client.sent) == 1 and not chat.online.is_set() and not sending.done()

    client.events_queue.put_nowait(Reconnecting("kicked: RECONNECT", 1, 0.5))
    client.events_queue.put_nowait(Reconnected("connector-2", 1))
    client.events_queue.put_nowait(None)
    await chat.show_events()
    await asyncio.wait_for(sending, 3)
    assert [text for _, text, _ in client.sent] == ["hello", "hello"]
    assert client.sent[0][2] == client.sent[1][2] != ""  # the same client_msg_id
    assert screen.shown == [
        "  (offline: the connector is draining; reconnecting in 0.5 s)",
        "  (reconnected)",
    ]


async def test_a_refused_line_is_said_so() -> None:
    client = FakeClient()
    screen = FakeScreen()
    chat = make_chat(client, screen)
    chat.online.set()
    client.send_failures = [SendError(wire_pb2.ERROR_CODE_FORBIDDEN, "not a member of g:7")]
    await chat.send("hi")
    assert screen.shown == ["  (not sent: FORBIDDEN: not a member of g:7: hi)"]


async def test_typed_lines_and_commands() -> None:
    client = FakeClient([msg(1, 2, "one"), msg(2, 2, "two")])
    screen = FakeScreen(["hello", "", "//slash", "/history 1", "/nonsense", "/quit", "unsent"])
    chat = make_chat(client, screen, last_seq=2)
    await chat.read_lines()
    assert [chat.outbox.get_nowait() for _ in range(chat.outbox.qsize())] == ["hello", "/slash"]
    assert screen.shown[0] == f"[{T}] #2 bob: two"  # /history 1
    assert screen.shown[1].startswith("(/history [N]")  # the help, for /nonsense


async def test_a_run_sends_what_was_typed_then_leaves_at_the_end_of_input() -> None:
    client = FakeClient()
    screen = FakeScreen(["first", "second"])
    screen.typed.put_nowait(None)  # end of input
    assert await make_chat(client, screen).run() == 0
    assert [text for _, text, _ in client.sent] == ["first", "second"]


async def test_a_run_ends_with_status_1_when_the_stream_ends_for_good(
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = FakeClient()
    client.close_reason = "kicked: DEVICE_LOGGED_IN_ELSEWHERE"
    screen = FakeScreen()
    chat = make_chat(client, screen)
    client.events_queue.put_nowait(
        wire_pb2.Kick(reason=wire_pb2.KICK_REASON_DEVICE_LOGGED_IN_ELSEWHERE)
    )
    client.events_queue.put_nowait(None)
    assert await chat.run() == 1
    assert "  (kicked: DEVICE_LOGGED_IN_ELSEWHERE)" in screen.shown
    assert "DEVICE_LOGGED_IN_ELSEWHERE" in capsys.readouterr().err


def test_offline_notes_are_short() -> None:
    unreachable = "reconnect failed: 0 unreachable: http://127.0.0.1:8080: ConnectError('x')"
    assert offline_note(Reconnecting(unreachable, 3, 2.04)) == (
        "still offline: gateway unreachable; reconnecting in 2.0 s"
    )
    assert offline_note(Reconnecting("heartbeat timeout", 1, 0.5)) == (
        "offline: heartbeat timeout; reconnecting in 0.5 s"
    )


def event_msg(seq: int, sender: int, kind: str, target: int, text: str = "") -> wire_pb2.Message:
    m = msg(seq, sender, text)
    m.content_type, m.refers_to = kind, 1000 + target
    return m


async def test_edited_and_recalled_messages_and_their_events() -> None:
    edited, recalled = msg(1, 2, "fixed"), msg(2, 1, "")
    edited.edited_at, recalled.recalled = TS, True
    history = [edited, recalled, event_msg(3, 2, events.EDIT, 1, "fixed")]
    client = FakeClient(history)
    screen = FakeScreen()
    chat = make_chat(client, screen, last_seq=3)
    await chat.opening()
    assert screen.shown[1:4] == [
        f"[{T}] #1 bob: fixed (edited)",
        f"[{T}] #2 alice: (message recalled)",
        "  (bob edited #1: fixed (edited))",
    ]
    screen.shown.clear()
    for event in (
        event_msg(4, 1, events.RECALL, 1),  # alice is a group admin, say
        event_msg(5, 2, events.EDIT, 999, "new"),  # a message never shown here
    ):
        client.events_queue.put_nowait(event)
    client.events_queue.put_nowait(None)
    await chat.show_events()
    assert screen.shown == [
        "  (alice recalled #1: message recalled)",
        "  (bob edited an earlier message: new (edited))",
    ]


async def test_group_events_read_as_lines_of_their_own() -> None:
    client = FakeClient()
    screen = FakeScreen()
    chat = make_chat(client, screen)
    added = wire_pb2.Message(
        msg_id=2001,
        conversation_id=ROOM,
        seq=5,
        sender_id=1,
        content_type=events.GROUP_MEMBERS_ADDED,
        body=b'{"actor_id":1,"user_ids":[2,3]}',
        server_ts=TS,
    )
    assert await chat.line_of(added) == f"[{T}] #5 * alice added bob, carol"


# ---------------------------------------------------------------- typing, presence


def typing(user: int, state: int = wire_pb2.TYPING_STATE_STARTED) -> wire_pb2.Typing:
    return wire_pb2.Typing(conversation_id=ROOM, user_id=user, state=state, expires_in_ms=6000)


async def test_a_peer_typing_is_shown_once_until_it_stops_or_its_message_comes() -> None:
    client, screen = FakeClient(), FakeScreen()
    chat = make_chat(client, screen)
    await chat.signals.on_typing(typing(2))
    await chat.signals.on_typing(typing(2))  # a refresh: nothing new to say
    await chat.signals.on_typing(typing(1))  # our own: never shown
    assert screen.shown == ["  (bob is typing…)"]
    chat.signals.on_message(msg(1, 2, "hi"))
    await chat.signals.on_typing(typing(2))
    assert screen.shown[-1] == "  (bob is typing…)" and len(screen.shown) == 2


async def test_the_peer_presence_at_opening_and_when_it_changes() -> None:
    client, screen = FakeClient(), FakeScreen()
    client.presence = [{"user_id": 2, "online": True, "last_seen_ms": TS}]
    chat = make_chat(client, screen)
    await chat.opening()
    assert "  (bob is online)" in screen.shown
    await chat.signals.on_presence(wire_pb2.Presence(user_id=2, online=False, last_seen_ms=TS))
    await chat.signals.on_presence(wire_pb2.Presence(user_id=3, online=True))  # not the room's
    assert screen.shown[-1] == f"  (bob is offline, last seen {T})"


async def test_editing_sends_typing_now_and_then_and_the_typing_command() -> None:
    client, screen = FakeClient(), FakeScreen()
    chat = make_chat(client, screen)
    chat.signals.edited()
    chat.signals.edited()  # within TYPING_REFRESH: not again
    await asyncio.sleep(0)
    assert client.typing_sent == [ROOM]
    await chat.command("/typing")
    assert client.typing_sent == [ROOM, ROOM]
