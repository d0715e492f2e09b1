"""`imctl certs init`: dev certificates on disk, and the exports that use them; the
client commands' --ca-file option."""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

import pytest
from cryptography import x509

from im.cli.main import build_parser, main
from im.config import Settings
from im.grpcutil import grpc_security
from im.tls import public_files


def exports(out: str) -> dict[str, str]:
    values = {}
    for line in out.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            values[key] = shlex.split(value)[0]
    return values


def test_init_writes_both_sets_and_prints_working_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "tls"
    assert main(["certs", "init", "--dir", str(folder), "--host", "chat.test"]) == 0
    env = exports(capsys.readouterr().out)
    assert Path(env["IM_CA_FILE"]) == (folder / "public" / "ca.crt").resolve()
    for key in ("IM_INTERNAL_KEY_FILE", "IM_TLS_KEY_FILE"):
        assert stat.S_IMODE(Path(env[key]).stat().st_mode) == 0o600
    settings = Settings(**{k[3:].lower(): v for k, v in env.items() if k != "IM_CA_FILE"})
    assert grpc_security(settings) is not None
    assert public_files(settings) is not None
    cert = x509.load_pem_x509_certificate(Path(env["IM_TLS_CERT_FILE"]).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["chat.test"]


def test_init_keeps_existing_certificates_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["certs", "init", "--dir", str(tmp_path)]
    main(args)
    cert = tmp_path / "internal" / "tls.crt"
    first = cert.read_bytes()
    main(args)
    assert cert.read_bytes() == first
    main([*args, "--force"])
    assert cert.read_bytes() != first


def test_ca_file_option_before_or_after_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IM_CA_FILE", raising=False)
    parser = build_parser()
    assert parser.parse_args(["listen", "-u", "a"]).ca_file is None
    assert parser.parse_args(["--ca-file", "/a.crt", "listen", "-u", "a"]).ca_file == "/a.crt"
    assert parser.parse_args(["register", "bob", "--ca-file", "/b.crt"]).ca_file == "/b.crt"
    monkeypatch.setenv("IM_CA_FILE", "/env.crt")
    assert build_parser().parse_args(["group", "info", "-u", "a", "g:1"]).ca_file == "/env.crt"
