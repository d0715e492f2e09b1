"""Options of ``imctl bench`` (kept free of heavy imports: imctl builds its parser
from this on every start)."""

from __future__ import annotations

import argparse

SCENARIO_NAMES = ("connections", "direct", "group", "login")


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Benchmark the suite over real sockets with the project's client library, beside a "
        "bare relay driven by the same load generator. Starts a standalone suite unless "
        "--distributed or --gateway is given. Tables on stdout, JSON (and a PNG chart when "
        "matplotlib is importable) in --out."
    )
    p.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"any of {', '.join(SCENARIO_NAMES)} (default: all, in that order)",
    )
    where = p.add_argument_group("suite")
    where.add_argument(
        "--distributed",
        action="store_true",
        help="start the local distributed cluster (needs scripts/dev-services.sh up)",
    )
    where.add_argument(
        "--gateway",
        dest="bench_gateway",
        metavar="URL",
        help="benchmark a suite already running at this gateway instead of starting one",
    )
    where.add_argument(
        "--connector-pid", type=int, help="with --gateway: pid of the connector, for RSS"
    )
    where.add_argument("--connectors", type=int, default=2, help="--distributed: connectors")
    where.add_argument("--routers", type=int, default=2, help="--distributed: routers")
    where.add_argument("--no-relay", action="store_true", help="skip the bare-relay baseline")
    where.add_argument(
        "--idle-seconds",
        type=float,
        default=5.0,
        help="before any load, measure the CPU the idle suite uses over this long (0: skip)",
    )

    gen = p.add_argument_group("load generator")
    gen.add_argument("--procs", type=int, default=2, help="load generator processes (default 2)")
    gen.add_argument("--out", default="bench-results", help="folder for JSON/PNG results")
    gen.add_argument("--no-chart", action="store_true", help="do not write the PNG chart")
    gen.add_argument("--body-size", type=int, default=64, help="message body bytes (>= 16)")
    gen.add_argument("--grace", type=float, default=5.0, help="seconds to wait for late deliveries")
    gen.add_argument(
        "--late-ms",
        type=float,
        default=10.0,
        help="an open-loop send this far behind its slot counts as late",
    )

    c = p.add_argument_group("connections")
    c.add_argument("--connections", type=int, default=5000, help="connections to hold")
    c.add_argument("--hold", type=float, default=10.0, help="seconds to hold them")
    c.add_argument(
        "--heartbeat", type=float, default=5.0, help="client ping interval while holding"
    )
    c.add_argument("--connect-concurrency", type=int, default=200)
    c.add_argument(
        "--connections-auth",
        choices=("mint", "login"),
        default="mint",
        help="mint tokens with the suite's key (default, when the bench started the suite) "
        "or log in through the gateway for each connection",
    )

    d = p.add_argument_group("direct and group")
    d.add_argument("--pairs", type=int, default=20, help="direct: user pairs")
    d.add_argument(
        "--duration", type=float, default=10.0, help="direct: seconds of each open-loop run"
    )
    d.add_argument(
        "--rate",
        type=float,
        help="direct: open-loop messages/s (default: --rate-fraction of the relay's max)",
    )
    d.add_argument(
        "--rate-fraction",
        type=float,
        default=0.5,
        help="open-loop rate as a fraction of the relay's max rate (default 0.5)",
    )
    d.add_argument(
        "--burst-seconds",
        type=float,
        default=5.0,
        help="closed-loop burst length for the max rate (0: skip)",
    )
    d.add_argument(
        "--window",
        type=int,
        default=32,
        help="burst: messages per sender between send and its own copy coming back",
    )
    d.add_argument(
        "--no-half-max",
        action="store_true",
        help="direct: skip the open-loop run at half the suite's own max (after the burst)",
    )
    d.add_argument(
        "--no-overload",
        action="store_true",
        help="direct: skip the open-loop overload run beyond the suite's own max",
    )
    d.add_argument(
        "--overload-factor",
        type=float,
        default=1.5,
        help="direct: overload run rate as a multiple of the suite's burst max (default 1.5)",
    )
    d.add_argument("--group-members", type=int, default=200)
    d.add_argument("--group-connected", type=int, default=100)
    d.add_argument("--group-senders", type=int, default=10)
    d.add_argument("--group-duration", type=float, default=10.0)
    d.add_argument(
        "--group-rate",
        type=float,
        help="group: open-loop messages/s (default: fraction of relay max)",
    )

    lg = p.add_argument_group("login")
    lg.add_argument("--login-seconds", type=float, default=10.0)
    lg.add_argument("--login-users", type=int, default=50)
    lg.add_argument("--login-concurrency", type=int, default=16)
    lg.add_argument(
        "--verify-seconds",
        type=float,
        default=3.0,
        help="argon2-alone and token-verification loops",
    )
