#!/usr/bin/env python3
"""Measure the admin bulk import rate against a running suite.

Writes N users (one argon2 hash shared by all, made with the suite's default cost) to
a JSON lines file and imports it with `imctl admin import`, whose last line reports
`users_per_second`. Usage (the gateway's admin token in IM_ADMIN_TOKEN):

    IM_ADMIN_TOKEN=... scripts/import-rate.py 20000 --gateway http://127.0.0.1:8080

A measurement to read, not a test: the rate depends on the machine and the database.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from im.auth import password_hasher
from im.config import Settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, help="users to import")
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--chunk", type=int, default=5000, help="users per request")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    parser.add_argument("--password", default="imported-pass-1", help="every user's password")
    args = parser.parse_args()
    hashed = password_hasher(Settings()).hash(args.password)
    prefix = f"imp{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "users.jsonl"
        with path.open("w") as out:
            for i in range(args.count):
                out.write(json.dumps({"username": f"{prefix}_{i}", "password_hash": hashed}))
                out.write("\n")
        imctl = Path(sys.executable).with_name("imctl")
        command = [str(imctl), "--gateway", args.gateway, "admin", "import", str(path)]
        options = ["--chunk", str(args.chunk), "--concurrency", str(args.concurrency)]
        return subprocess.call([*command, *options])


if __name__ == "__main__":
    sys.exit(main())
