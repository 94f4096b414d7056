"""TLS for the router: a development CA and server certificate generated on demand, or files the user gives."""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.mesh.credentials import PROJECT_ROOT
from components.mesh.errors import ConfigError

DEFAULT_TLS_DIR = PROJECT_ROOT / ".crossbar" / "tls"
DEV_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    """Where the router's key and certificate are, and the CA that clients trust."""

    key: Path
    certificate: Path
    ca_certificate: Path = None

    def __post_init__(self):
        for name in ("key", "certificate"):
            if not Path(getattr(self, name)).is_file():
                raise ConfigError(f"TLS {name} file {getattr(self, name)} does not exist")


def _write_private(path, data):
    path.write_bytes(data)
    path.chmod(0o600)


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def development_certificates(directory=DEFAULT_TLS_DIR, names=DEV_NAMES):
    """A CA and a server certificate for names, created once in directory (kept out of git), reused after."""
    directory = Path(directory)
    files = TlsFiles.__new__(TlsFiles)
    object.__setattr__(files, "key", directory / "server.key")
    object.__setattr__(files, "certificate", directory / "server.pem")
    object.__setattr__(files, "ca_certificate", directory / "ca.pem")
    if files.key.exists() and files.certificate.exists() and files.ca_certificate.exists():
        return TlsFiles(files.key, files.certificate, files.ca_certificate)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, server_key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nerve development CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=825))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    alternative = []
    for name in names:
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative.append(x509.DNSName(name))
    server = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
              .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=825))
              .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
    _write_private(directory / "ca.key", _pem_key(ca_key))
    _write_private(files.key, _pem_key(server_key))
    files.certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.ca_certificate.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(files.key, files.certificate, files.ca_certificate)


def endpoint_tls(files):
    """The `tls` block of a Crossbar listening endpoint."""
    return {"key": str(Path(files.key).resolve()), "certificate": str(Path(files.certificate).resolve())}
