"""A throwaway certificate authority and certificates for the TLS tests, made with the
``openssl`` command line, and handed to the server's OS user when PostgreSQL must read them."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {result.stderr.strip()}")


@dataclass(frozen=True)
class CertAuthority:
    cert: Path
    key: Path


def make_ca(directory: Path, name: str) -> CertAuthority:
    """A self-signed CA (EC P-256, one day) named ``name``."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl("req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-keyout", str(key), "-out", str(cert),
             "-days", "1", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return CertAuthority(cert, key)


def issue_cert(ca: CertAuthority, directory: Path, name: str,
               sans: tuple[str, ...] = ("IP:127.0.0.1", "DNS:localhost"),
               usage: str = "serverAuth") -> tuple[Path, Path]:
    """A certificate and key signed by ``ca`` for the given subjectAltNames; ``usage`` is the
    extended key usage (``clientAuth`` for a client certificate)."""
    key, csr, cert = (directory / f"{name}.key", directory / f"{name}.csr",
                      directory / f"{name}.crt")
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName={','.join(sans)}\nextendedKeyUsage={usage}\n"
                   f"basicConstraints=CA:FALSE\n")
    _openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={name}", cwd=directory)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
             "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext),
             cwd=directory)
    return cert, key


@contextlib.contextmanager
def postgres_readable_dir() -> Iterator[Path]:
    """A directory the server's OS user can read (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="pgconn-tls-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def hand_to_postgres(*paths: Path, private: tuple[Path, ...] = ()) -> None:
    """Certificates readable by the server; private keys owned by it with mode 0600 (the server
    refuses a key others can read)."""
    uid = gid = -1
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        uid, gid = pw.pw_uid, pw.pw_gid
    for path in (*paths, *private):
        if uid >= 0:
            os.chown(path, uid, gid)
        path.chmod(0o600 if path in private else 0o644)
