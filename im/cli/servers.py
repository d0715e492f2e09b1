"""``imctl`` commands that run servers or look after them: standalone, serve, cluster,
db upgrade, config-doc, bench."""

from __future__ import annotations

import argparse

SERVICES = ("gateway", "user", "group", "connector", "router")


def cmd_standalone(args: argparse.Namespace) -> int:
    from im.config import Settings
    from im.runtime import install_uvloop, setup_logging

    settings = Settings()
    setup_logging(settings, "standalone")
    install_uvloop()
    from im.standalone import run_servers, run_standalone

    return run_servers(run_standalone(settings), "imctl standalone")


def cmd_serve(args: argparse.Namespace) -> int:
    from im.config import Settings
    from im.runtime import install_uvloop, setup_logging

    settings = Settings()
    setup_logging(settings, args.service)
    install_uvloop()
    from im.standalone import run_servers, serve_one

    return run_servers(serve_one(args.service, settings), f"imctl serve {args.service}")


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Create/upgrade the SQL schema (for deployments with IM_AUTO_MIGRATE=false)."""
    from im.config import Settings
    from im.db import create_schema, make_engine

    settings = Settings()
    url = settings.resolved_database_url()
    engine = make_engine(url)
    try:
        revision = create_schema(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    print(f"schema at revision {revision}: {where}")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    """Every service its own process on the real servers (scripts/dev-services.sh up)."""
    from pathlib import Path

    from im.cluster import run_cluster

    return run_cluster(Path(args.log_dir), connectors=args.connectors, routers=args.routers)


def cmd_bench(args: argparse.Namespace) -> int:
    from im.bench import main as bench_main

    return bench_main(args)


def cmd_config_doc(args: argparse.Namespace) -> int:
    from im.config import settings_table

    print(settings_table())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "standalone",
        help="run all five services in one process",
        description="Run the gateway, user, group, connector and router services in this "
        "process on embedded backends (SQLite files in IM_DATA_DIR, in-process bus, "
        "registry and presence): nothing else to install. Prints where each listens, "
        "stops cleanly on Ctrl-C or SIGTERM. Ports and everything else come from IM_* "
        "environment variables (`imctl config-doc`), e.g. IM_GATEWAY_PORT=8081.",
    )
    p.set_defaults(func=cmd_standalone)

    p = sub.add_parser(
        "serve",
        help="run one service",
        description="Run one service in this process, configured by IM_* environment "
        "variables (`imctl config-doc`): the distributed mode's processes, one per "
        "service, with the backends named by IM_DATABASE_URL, IM_BUS_URL, IM_KV_URL, ... "
        "Internal gRPC needs IM_INTERNAL_CA_FILE/CERT/KEY (or IM_INTERNAL_INSECURE=true "
        "for development).",
    )
    p.add_argument("service", choices=SERVICES, help="which service")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "cluster",
        help="run a local distributed cluster (one process per service)",
        description="Start every service as its own process on the real servers "
        "(scripts/dev-services.sh up first), gateway on :8080; Ctrl-C stops them all.",
    )
    p.add_argument("--log-dir", default=".im-data/cluster", help="where each process logs")
    p.add_argument("--connectors", type=int, default=2, help="connector processes")
    p.add_argument("--routers", type=int, default=2, help="router processes")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("db", help="database maintenance", description="Database maintenance.")
    db_sub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_sub.add_parser(
        "upgrade",
        help="create/upgrade the SQL schema",
        description="Create or upgrade the SQL schema of IM_DATABASE_URL (idempotent); "
        "distributed deployments run it once per release with IM_AUTO_MIGRATE=false.",
    ).set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser(
        "config-doc",
        help="print the settings table (markdown)",
        description="Print every IM_* setting with its default and meaning as a "
        "markdown table (the one in the README is generated from it).",
    )
    p.set_defaults(func=cmd_config_doc)

    from im.cli import deadletters

    deadletters.register(sub)

    from im.cli import certs

    certs.register(sub)

    from im.bench import add_bench_arguments

    p = sub.add_parser("bench", help="benchmark a suite beside a bare relay")
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)
