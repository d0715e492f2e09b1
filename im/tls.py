"""Certificates and TLS contexts: a private CA with leaf certificates for development
(`imctl certs`, standalone, `imctl cluster`), and the ssl contexts of the public
listeners and of the clients that verify them.

Two separate CAs: the internal one (mutual TLS between the suite's services) signs
certificates that internal gRPC accepts as "one of us"; the public one only signs the
gateway's and connectors' server certificate. A key that the public listeners hold can
therefore never pass as a member of the suite.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from im.config import Settings

CA_DAYS = 3650
LEAF_DAYS = 825  # the longest lifetime browsers and Apple platforms accept
DEFAULT_PUBLIC_HOSTS = ("localhost", "127.0.0.1", "::1")

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CertFiles:
    """One folder's CA certificate and one leaf certificate with its key."""

    ca: Path
    cert: Path
    key: Path

    def exist(self) -> bool:
        return self.ca.is_file() and self.cert.is_file() and self.key.is_file()


def cert_files(folder: Path) -> CertFiles:
    return CertFiles(folder / "ca.crt", folder / "tls.crt", folder / "tls.key")


# ------------------------------------------------------------------ generation


def _now() -> datetime.datetime:
    # Certificate validity is wall-clock time by definition (peers compare it with
    # theirs), not the suite's injectable clock.
    return datetime.datetime.now(datetime.UTC)


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "im-suite"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(common_name: str, days: int = CA_DAYS) -> tuple[x509.Certificate, Key]:
    key = new_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_leaf(
    ca_cert: x509.Certificate,
    ca_key: Key,
    hosts: list[str],
    *,
    client: bool,
    days: int = LEAF_DAYS,
) -> tuple[x509.Certificate, Key]:
    """A certificate for ``hosts`` (DNS names or IP addresses), signed by the CA. It
    serves TLS; with ``client`` it may also authenticate as a client (mutual TLS)."""
    if not hosts:
        raise ValueError("a certificate needs at least one host name")
    key = new_key()
    now = _now()
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(_san(hosts), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


# ------------------------------------------------------------------ files


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_file(path: Path, data: bytes, *, private: bool) -> None:
    """Write atomically; a private file is created 0600 (never readable by others, not
    even for the moment between creating and chmod-ing it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_ca(folder: Path) -> tuple[x509.Certificate, Key] | None:
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    if not (ca.is_file() and ca_key.is_file()):
        return None
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_key}: expected an EC private key")
    return x509.load_pem_x509_certificate(ca.read_bytes()), key


def issue(
    folder: Path, hosts: list[str], *, client: bool, ca_name: str, force: bool = False
) -> CertFiles:
    """``folder``/ca.crt (+ ca.key, created once) and tls.crt/tls.key for ``hosts``.
    Existing files are kept unless ``force``: a new leaf from the same CA then."""
    files = cert_files(folder)
    if files.exist() and not force:
        return files
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    loaded = _load_ca(folder)
    if loaded is None:
        ca_cert, ca_key = make_ca(ca_name)
        write_file(folder / "ca.key", key_pem(ca_key), private=True)
        write_file(files.ca, cert_pem(ca_cert), private=False)
    else:
        ca_cert, ca_key = loaded
    cert, key = make_leaf(ca_cert, ca_key, hosts, client=client)
    write_file(files.key, key_pem(key), private=True)
    write_file(files.cert, cert_pem(cert), private=False)
    return files


def ensure_internal(folder: Path, server_name: str, force: bool = False) -> CertFiles:
    """The internal CA and one certificate every service of a dev suite shares: it
    names ``server_name`` (what gRPC clients verify) and the loopback addresses."""
    hosts = [server_name, "localhost", "127.0.0.1", "::1"]
    return issue(folder, hosts, client=True, ca_name="im-suite internal CA", force=force)


def ensure_public(folder: Path, hosts: list[str], force: bool = False) -> CertFiles:
    """A dev CA for clients to trust and the gateway's/connectors' server certificate."""
    return issue(folder, hosts, client=False, ca_name="im-suite dev public CA", force=force)


# ------------------------------------------------------------------ contexts


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS for a public listener (connector TCP and WebSocket)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def public_files(settings: Settings) -> tuple[str, str] | None:
    """The public listeners' certificate and key, or None: plaintext."""
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise ValueError("TLS for clients needs both IM_TLS_CERT_FILE and IM_TLS_KEY_FILE")
    if not settings.tls_cert_file:
        return None
    return settings.tls_cert_file, settings.tls_key_file


def public_ssl(settings: Settings) -> ssl.SSLContext | None:
    files = public_files(settings)
    return server_context(*files) if files is not None else None


def with_dev_internal_certs(settings: Settings) -> Settings:
    """Standalone: the configured internal certificates, else a dev set made in
    data_dir/tls/internal on first run (unless internal TLS is explicitly off).

    No plaintext health port either: the five services share the process and would
    all ask for that one port.
    """
    settings = settings.model_copy(update={"grpc_health_port": 0})
    configured = (
        settings.internal_ca_file,
        settings.internal_cert_file,
        settings.internal_key_file,
    )
    if any(configured) or settings.internal_insecure:
        return settings
    files = ensure_internal(settings.data_dir / "tls" / "internal", settings.internal_server_name)
    return settings.model_copy(
        update={
            "internal_ca_file": str(files.ca.resolve()),
            "internal_cert_file": str(files.cert.resolve()),
            "internal_key_file": str(files.key.resolve()),
        }
    )
