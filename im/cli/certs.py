"""``imctl certs``: development certificates for internal mutual TLS and for the
public listeners, printed as the environment that uses them."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from im.tls import DEFAULT_PUBLIC_HOSTS, CertFiles, ensure_internal, ensure_public


def environment(internal: CertFiles, public: CertFiles) -> dict[str, str]:
    """The settings that use these certificates (servers), and the client's CA."""
    return {
        "IM_INTERNAL_CA_FILE": str(internal.ca.resolve()),
        "IM_INTERNAL_CERT_FILE": str(internal.cert.resolve()),
        "IM_INTERNAL_KEY_FILE": str(internal.key.resolve()),
        "IM_TLS_CERT_FILE": str(public.cert.resolve()),
        "IM_TLS_KEY_FILE": str(public.key.resolve()),
        "IM_CA_FILE": str(public.ca.resolve()),  # read by imctl's client commands
    }


def cmd_init(args: argparse.Namespace) -> int:
    from im.config import Settings

    settings = Settings()
    folder = Path(args.dir) if args.dir else settings.data_dir / "tls"
    server_name = args.server_name or settings.internal_server_name
    internal = ensure_internal(folder / "internal", server_name, force=args.force)
    public = ensure_public(folder / "public", args.host or list(DEFAULT_PUBLIC_HOSTS), args.force)
    print(f"# development certificates in {folder.resolve()} (keys are 0600)")
    print("# internal: CA + one certificate every service presents (mutual TLS)")
    print("# public: CA for clients to trust + the gateway's and connectors' certificate")
    for key, value in environment(internal, public).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("certs", help="development certificates (internal mTLS, client TLS)")
    actions = p.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="create a dev CA and certificates (kept if present); print the IM_* exports",
        description="Creates DIR/internal (CA, shared service certificate) and DIR/public "
        "(CA for clients, server certificate for --host names). Existing files are kept "
        'unless --force. Use: eval "$(imctl certs init)".',
    )
    init.add_argument("--dir", help="output folder (default: $IM_DATA_DIR/tls)")
    init.add_argument(
        "--host",
        action="append",
        help="name or IP clients use to reach the gateway/connectors (repeat; default: "
        + ", ".join(DEFAULT_PUBLIC_HOSTS)
        + ")",
    )
    init.add_argument("--server-name", help="internal name (default: IM_INTERNAL_SERVER_NAME)")
    init.add_argument("--force", action="store_true", help="issue new certificates (same CAs)")
    init.set_defaults(func=cmd_init)
