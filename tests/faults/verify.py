"""What a fault run must leave behind, measured from the clients' records and the
stored histories, and the table of all runs printed at the end of the session."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from im.v1 import wire_pb2
from tests.faults.traffic import SentMessage, Traffic

EXAMPLES = 5  # ids shown per problem in a failure message


@dataclass
class Outcome:
    fault: str
    acked: int = 0  # distinct client_msg_ids acknowledged
    stored: int = 0  # messages in the histories
    delivered: int = 0  # (stored message, receiving device) pairs seen on a screen
    expected_deliveries: int = 0
    lost: int = 0  # acked, not stored
    duplicated: int = 0  # extra stored copies of one client_msg_id + repeats on a screen
    gaps: int = 0  # seqs missing (or repeated) in 1..n
    undelivered: int = 0  # stored, never reached a receiving device
    live: int = 0
    by_sync: int = 0
    abandoned: int = 0  # sends still unacknowledged when the drain bound ran out
    connections_lost: int = 0  # client connections that ended without the client closing
    sends_resumed_after: float | None = None
    live_resumed_after: float | None = None
    not_ready_for: float = 0.0  # seconds /readyz failed after the fault began
    duration: float = 0.0
    problems: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # context for a failure message
    error: str | None = None  # the run itself broke before it could be judged

    def counts(self) -> str:
        return (
            f"acked={self.acked} stored={self.stored} delivered={self.delivered}/"
            f"{self.expected_deliveries} (live {self.live}, by sync {self.by_sync}) "
            f"lost={self.lost} duplicated={self.duplicated} gaps={self.gaps} "
            f"undelivered={self.undelivered} abandoned={self.abandoned} "
            f"connections lost={self.connections_lost}, "
            f"sends resumed after {seconds(self.sends_resumed_after)}, "
            f"live delivery resumed after {seconds(self.live_resumed_after)}, "
            f"/readyz failing ~{self.not_ready_for:.1f} s"
        )


# Filled by every fault test (passing or not); printed by pytest_terminal_summary.
RESULTS: list[Outcome] = []


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def sample(items: list) -> str:  # type: ignore[type-arg]
    shown = ", ".join(str(i) for i in items[:EXAMPLES])
    return shown + (f", ... ({len(items)} in all)" if len(items) > EXAMPLES else "")


# ------------------------------------------------------------------- recovery


def sends_resumed_after(traffic: Traffic, since: float) -> float | None:
    """Seconds from ``since`` until every sender had a message acknowledged again."""
    firsts = []
    for sender in traffic.senders:
        acks = [
            m.acked_at
            for m in traffic.sent.values()
            if m.sender == sender.name and m.acked_at is not None and m.acked_at >= since
        ]
        if not acks:
            return None
        firsts.append(min(acks))
    return max(firsts) - since


def live_resumed_after(traffic: Traffic, since: float) -> float | None:
    """Seconds from ``since`` until every receiver had a message pushed live that was
    first sent after ``since`` (a message from before could be a late retransmit)."""
    by_msg_id = {m.msg_id: m for m in traffic.sent.values() if m.msg_id is not None}
    firsts = []
    for receiver in traffic.receivers:
        lives = []
        for got in receiver.received.values():
            sent = traffic.sent.get(got.client_msg_id) or by_msg_id.get(got.msg_id)
            if got.origin == "live" and sent is not None and sent.first_try >= since:
                lives.append(got.at)
        if not lives:
            return None
        firsts.append(min(lives))
    return max(firsts) - since


# ------------------------------------------------------------------- checks


def check_storage(
    outcome: Outcome, sent: dict[str, SentMessage], history: dict[str, list[wire_pb2.Message]]
) -> None:
    """Each acked client_msg_id stored exactly once, under the acked msg_id."""
    copies: dict[str, list[wire_pb2.Message]] = {}
    for messages in history.values():
        for message in messages:
            copies.setdefault(message.client_msg_id, []).append(message)
    acked = [m for m in sent.values() if m.msg_id is not None]
    outcome.acked = len(acked)
    outcome.stored = sum(len(messages) for messages in history.values())

    lost = [m for m in acked if m.client_msg_id not in copies]
    outcome.lost = len(lost)
    if lost:
        detail = [
            f"{m.client_msg_id} msg_id={m.msg_id} {m.conversation_id} tries={m.tries} "
            f"acked at {m.acked_at:.3f} (monotonic)"
            for m in lost[:5]
        ]
        outcome.problems.append(f"{len(lost)} acked messages not stored: {detail}")

    twice = {cmid: len(c) for cmid, c in copies.items() if len(c) > 1}
    outcome.duplicated += sum(n - 1 for n in twice.values())
    if twice:
        outcome.problems.append(
            f"{len(twice)} client_msg_ids stored more than once: {sample(sorted(twice))}"
        )

    wrong = [
        f"{m.client_msg_id} acked {m.msg_id}, stored {[c.msg_id for c in copies[m.client_msg_id]]}"
        for m in acked
        if m.client_msg_id in copies and m.msg_id not in {c.msg_id for c in copies[m.client_msg_id]}
    ]
    if wrong:
        outcome.problems.append(f"{len(wrong)} stored under another msg_id: {sample(wrong)}")

    altered = [
        cmid
        for cmid, cs in copies.items()
        if cmid in sent
        and any(
            c.body.decode(errors="replace") != sent[cmid].text
            or c.conversation_id != sent[cmid].conversation_id
            for c in cs
        )
    ]
    if altered:
        outcome.problems.append(
            f"{len(altered)} stored with another text or conversation: {sample(altered)}"
        )

    foreign = [cmid for cmid in copies if cmid not in sent]
    if foreign:
        outcome.problems.append(f"{len(foreign)} stored messages nobody sent: {sample(foreign)}")

    unacked = [cmid for cmid in copies if cmid in sent and sent[cmid].msg_id is None]
    if unacked:
        outcome.details.append(f"stored though never acked (abandoned sends): {sample(unacked)}")


def check_seqs(outcome: Outcome, history: dict[str, list[wire_pb2.Message]]) -> None:
    """seq is 1..n without gaps or repeats in every conversation."""
    for conversation_id, messages in history.items():
        seqs = [m.seq for m in messages]
        top = max(seqs, default=0)
        missing = sorted(set(range(1, top + 1)) - set(seqs))
        repeated = len(seqs) - len(set(seqs))
        outcome.gaps += len(missing) + repeated
        if missing or repeated:
            outcome.problems.append(
                f"{conversation_id}: seqs 1..{top} miss {sample(missing)}, {repeated} repeated"
            )
        if seqs != sorted(seqs):
            outcome.problems.append(f"{conversation_id}: history not in seq order")


def check_deliveries(
    outcome: Outcome, traffic: Traffic, history: dict[str, list[wire_pb2.Message]]
) -> None:
    """Every stored message reached every receiving device (live or by sync) exactly
    once after dedupe by msg_id, and nothing reached one that is not stored."""
    for conv in traffic.conversations:
        stored = {m.msg_id: m for m in history[conv.conversation_id]}
        for receiver in conv.receivers:
            got = {
                msg_id: r
                for msg_id, r in receiver.received.items()
                if r.conversation_id == conv.conversation_id
            }
            outcome.expected_deliveries += len(stored)
            reached = [got[i] for i in stored if i in got]
            outcome.delivered += len(reached)
            outcome.live += sum(1 for r in reached if r.origin == "live")
            outcome.by_sync += sum(1 for r in reached if r.origin == "sync")
            missed = sorted(stored[i].seq for i in stored if i not in got)
            outcome.undelivered += len(missed)
            if missed:
                cursor = receiver.client.cursor(conv.conversation_id)
                outcome.problems.append(
                    f"{receiver.name} never got seqs {sample(missed)} of "
                    f"{conv.conversation_id} (its client's cursor there: {cursor})"
                )
            phantom = sorted(i for i in got if i not in stored)
            if phantom:
                outcome.problems.append(
                    f"{receiver.name} got {len(phantom)} messages that are not stored: "
                    f"{sample(phantom)}"
                )
    repeats = sum(r.duplicates for r in traffic.receivers)
    outcome.duplicated += repeats
    if repeats:
        outcome.problems.append(f"{repeats} messages shown twice on a receiver's screen")


def check_send_errors(outcome: Outcome, traffic: Traffic) -> None:
    """Senders may see retryable refusals during a fault, nothing else: UNAVAILABLE
    while a backend is down, RATE_LIMITED, no SendAck in time, and BUSY once it is back
    (routers work off what waited, and a connector refuses new Sends while they lag:
    its admission control, with a retry-after the client library waits out a few times
    before it gives up). Any other code (FORBIDDEN for a member, INTERNAL...) is a
    finding."""
    unexpected: Counter[str] = Counter()
    for sender in traffic.senders:
        for kind, n in sender.failures.items():
            retryable = kind.startswith(
                ("send: UNAVAILABLE", "send: RATE_LIMITED", "send: BUSY", "send: no")
            )
            if kind.startswith("send: ") and not retryable:
                unexpected[kind] += n
            if kind.startswith("unexpected: "):
                unexpected[kind] += n
    for receiver in traffic.receivers:
        for kind, n in receiver.failures.items():
            if kind.startswith("unexpected: "):
                unexpected[kind] += n
    if unexpected:
        outcome.problems.append(f"unexpected errors: {dict(unexpected)}")


def client_details(traffic: Traffic) -> list[str]:
    """What the clients went through, for the failure message."""
    lines = []
    failures: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    for p in traffic.participants:
        failures.update(p.failures)
        closes.update(p.close_reasons)
    lines.append(f"client failures (retried): {dict(failures.most_common())}")
    lines.append(f"connections lost, by reason: {dict(closes.most_common())}")
    placed = Counter(p.connector_ids[-1] for p in traffic.participants if p.connector_ids)
    lines.append(f"clients per connector at the end: {dict(placed)}")
    tries = Counter(m.tries for m in traffic.sent.values())
    lines.append(f"attempts per message: {dict(sorted(tries.items()))}")
    slow = [r for r in traffic.receivers if not r.received]
    if slow:
        lines.append(f"receivers that got nothing: {[r.name for r in slow]}")
    return lines


def evaluate(
    fault: str,
    traffic: Traffic,
    history: dict[str, list[wire_pb2.Message]],
    fault_end: float,
) -> Outcome:
    outcome = Outcome(fault)
    check_storage(outcome, traffic.sent, history)
    check_seqs(outcome, history)
    check_deliveries(outcome, traffic, history)
    check_send_errors(outcome, traffic)
    outcome.abandoned = sum(1 for m in traffic.sent.values() if m.acked_at is None)
    outcome.sends_resumed_after = sends_resumed_after(traffic, fault_end)
    outcome.live_resumed_after = live_resumed_after(traffic, fault_end)
    if outcome.abandoned:
        outcome.problems.append(
            f"{outcome.abandoned} sends never acknowledged after the traffic stopped"
        )
    outcome.connections_lost = sum(sum(p.close_reasons.values()) for p in traffic.participants)
    outcome.details.extend(client_details(traffic))
    return outcome


# -------------------------------------------------------------------- table


COLUMNS = (
    "fault",
    "acked",
    "stored",
    "delivered",
    "lost",
    "dup",
    "gaps",
    "undelivered",
    "live/sync",
    "conn lost",
    "sends resumed after",
    "live delivery resumed after",
    "/readyz failing",
    "took",
    "result",
)


def row(outcome: Outcome) -> list[str]:
    if outcome.error is not None:
        return [outcome.fault, *["-"] * (len(COLUMNS) - 3), f"{outcome.duration:.0f} s", "ERROR"]
    return [
        outcome.fault,
        str(outcome.acked),
        str(outcome.stored),
        f"{outcome.delivered}/{outcome.expected_deliveries}",
        str(outcome.lost),
        str(outcome.duplicated),
        str(outcome.gaps),
        str(outcome.undelivered),
        f"{outcome.live}/{outcome.by_sync}",
        str(outcome.connections_lost),
        seconds(outcome.sends_resumed_after),
        seconds(outcome.live_resumed_after),
        f"{outcome.not_ready_for:.1f} s",
        f"{outcome.duration:.0f} s",
        "FAIL" if outcome.problems else "ok",
    ]


def table(results: list[Outcome]) -> list[str]:
    """A Markdown table, one row per fault run."""
    rows = [list(COLUMNS), *(row(o) for o in results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines
