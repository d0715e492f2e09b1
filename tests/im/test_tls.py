"""Development certificates: what the CA signs, who may read the keys, what is kept
across runs, and the settings standalone derives from them."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from im.config import Settings
from im.tls import (
    ensure_internal,
    ensure_public,
    public_files,
    public_ssl,
    with_dev_internal_certs,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(ext.get_values_for_type(x509.DNSName))
    return names | {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_internal_certificate_is_signed_by_its_ca_for_both_directions(tmp_path: Path) -> None:
    files = ensure_internal(tmp_path / "internal", "im-internal")
    ca, leaf = load(files.ca), load(files.cert)
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert {"im-internal", "localhost", "127.0.0.1", "::1"} <= sans(leaf)
    assert usages(leaf) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_public_certificate_serves_only_and_names_the_hosts(tmp_path: Path) -> None:
    files = ensure_public(tmp_path / "public", ["chat.example.test", "10.1.2.3"])
    leaf = load(files.cert)
    leaf.verify_directly_issued_by(load(files.ca))
    assert sans(leaf) == {"chat.example.test", "10.1.2.3"}
    ext = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ext.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    # A public key can never pass as a member of the suite (no client use, other CA).
    assert usages(leaf) == {ExtendedKeyUsageOID.SERVER_AUTH}


def test_private_keys_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    folder = tmp_path / "internal"
    files = ensure_internal(folder, "im-internal")
    assert mode(files.key) == 0o600
    assert mode(folder / "ca.key") == 0o600
    assert mode(folder) == 0o700
    assert mode(files.cert) & 0o133 == 0  # public: readable, written by the owner only
    assert not list(folder.glob(".*.tmp"))


def test_existing_certificates_are_kept_and_force_keeps_the_ca(tmp_path: Path) -> None:
    folder = tmp_path / "internal"
    first = ensure_internal(folder, "im-internal")
    ca_pem, leaf_pem = first.ca.read_bytes(), first.cert.read_bytes()
    again = ensure_internal(folder, "im-internal")
    assert (again.ca.read_bytes(), again.cert.read_bytes()) == (ca_pem, leaf_pem)
    renewed = ensure_internal(folder, "im-internal", force=True)
    assert renewed.ca.read_bytes() == ca_pem  # peers keep trusting it
    assert renewed.cert.read_bytes() != leaf_pem
    load(renewed.cert).verify_directly_issued_by(load(renewed.ca))


def test_standalone_makes_internal_certificates_once_in_the_data_dir(tmp_path: Path) -> None:
    settings = with_dev_internal_certs(Settings(data_dir=tmp_path, grpc_health_port=8081))
    assert settings.grpc_health_port == 0  # five servers, one process: no shared port
    folder = (tmp_path / "tls" / "internal").resolve()
    assert Path(settings.internal_ca_file) == folder / "ca.crt"
    assert Path(settings.internal_cert_file) == folder / "tls.crt"
    assert Path(settings.internal_key_file) == folder / "tls.key"
    before = Path(settings.internal_cert_file).read_bytes()
    again = with_dev_internal_certs(Settings(data_dir=tmp_path))
    assert Path(again.internal_cert_file).read_bytes() == before


def test_standalone_keeps_configured_certificates_and_explicit_insecure(tmp_path: Path) -> None:
    mine = Settings(data_dir=tmp_path, internal_ca_file="/etc/ca.crt")
    assert with_dev_internal_certs(mine).internal_ca_file == "/etc/ca.crt"
    off = with_dev_internal_certs(Settings(data_dir=tmp_path, internal_insecure=True))
    assert off.internal_cert_file == ""
    assert not (tmp_path / "tls").exists()


def test_public_tls_needs_both_files(tmp_path: Path) -> None:
    assert public_files(Settings()) is None
    assert public_ssl(Settings()) is None
    with pytest.raises(ValueError, match="IM_TLS_KEY_FILE"):
        public_files(Settings(tls_cert_file="/x.crt"))
    files = ensure_public(tmp_path, ["localhost"])
    settings = Settings(tls_cert_file=str(files.cert), tls_key_file=str(files.key))
    assert public_files(settings) == (str(files.cert), str(files.key))
    assert public_ssl(settings) is not None
