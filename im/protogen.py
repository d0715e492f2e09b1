"""Generate the protobuf and gRPC modules (``im/v1/*_pb2*.py``) from ``protos/``.

Run by ``make install`` (and ``make proto``); the generated files are not committed.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(proto_root: Path = PROTOS, out: Path = ROOT) -> list[Path]:
    from grpc_tools import protoc

    files = sorted(proto_root.rglob("*.proto"))
    if not files:
        raise SystemExit(f"no .proto files under {proto_root}")
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(f.relative_to(proto_root)) for f in files],
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    return files


def main() -> None:
    files = generate()
    print(f"generated protobuf modules for {len(files)} files", file=sys.stderr)


if __name__ == "__main__":
    main()
