"""The local stack's TLS certificate: a private certificate authority and a server certificate it
signed for 127.0.0.1 and localhost, made with openssl on the first start and kept in
`<data dir>/tls/` (keys mode 0600). Clients trust `ca.pem` (curl --cacert .data/tls/ca.pem)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from infergate_devstack import install


@dataclass(frozen=True)
class TlsFiles:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def certificate(self) -> Path:
        return self.directory / "server.pem"

    @property
    def key(self) -> Path:
        return self.directory / "server.key"


def ensure_certificate(directory: Path) -> TlsFiles:
    """The CA and server certificate in `directory`, made if missing (about 0.1 s)."""
    files = TlsFiles(directory)
    if files.ca.exists() and files.certificate.exists() and files.key.exists():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    openssl = str(install.require_program("openssl"))
    ca_key = directory / "ca.key"
    request = directory / "server.csr"
    extensions = directory / "server.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _run(openssl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ca_key)
    _run(openssl, "req", "-x509", "-new", "-key", ca_key, "-sha256", "-days", "3650",
         "-subj", "/CN=InferGate local CA", "-out", files.ca)  # fmt: skip
    _run(openssl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", files.key)
    _run(openssl, "req", "-new", "-key", files.key, "-subj", "/CN=127.0.0.1", "-out", request)
    _run(openssl, "x509", "-req", "-in", request, "-CA", files.ca, "-CAkey", ca_key,
         "-CAcreateserial", "-days", "825", "-sha256", "-extfile", extensions,
         "-out", files.certificate)  # fmt: skip
    for secret in (ca_key, files.key):
        os.chmod(secret, 0o600)
    request.unlink()
    return files


def _run(*argv: str | Path) -> None:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise install.InstallError(f"openssl failed: {result.stderr.strip()}")
