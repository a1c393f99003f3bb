"""Helpers of the hardening tests (issue 7): hostile names, process gauges, a test CA, the
server's statement log, and a TCP relay that gives sessions distinct client addresses.

Nothing here mocks the database: the relay forwards real PostgreSQL connections, the CA is made
with the ``openssl`` command line, the statement log is the server's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# -- hostile names --------------------------------------------------------------------------

INJECTION = 'a"} 1\nfake_metric{'
"""A label-injection attempt: closes the label set, starts a sample and a new series."""
EURO_63 = "€" * 21
"""63 bytes of 3-byte UTF-8: PostgreSQL's NAMEDATALEN - 1, exactly."""
TERMINAL = "evil\x1b]0;pwned\x07\\x\r"
"""Terminal escapes (set the window title, bell), a backslash and a carriage return."""
QUOTES = "o'brien \"q\" {x=\"y\"},"
DB_CONTROL = 'db\x1b[2J\r\n{x="y"}'
"""Clears the screen, then a CR LF and a Prometheus label set."""
CJK_63 = "日本" * 10 + "abc"


# -- process gauges -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStats:
    rss_kb: int
    fds: int
    threads: int


def proc_stats(pid: int | str = "self") -> ProcStats:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return ProcStats(rss_kb=int(fields["VmRSS"].split()[0]),
                     fds=len(os.listdir(f"/proc/{pid}/fd")),
                     threads=int(fields["Threads"].strip()))


# -- a test CA --------------------------------------------------------------------------------


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


# -- the server's statement log ---------------------------------------------------------------

LOG_PREFIX = "@@ %m [%p] app=%a user=%u @@ "
"""``log_line_prefix`` that makes entries easy to split and attribute."""
_ENTRY = re.compile(r"^@@ \S+ \S+ \S+ \[(\d+)\] app=(.*?) user=(.*?) @@ ", re.M)
_STATEMENT = re.compile(r"^(?:LOG|STATEMENT):\s+(?:statement|execute [^:]*|bind [^:]*):\s*",
                        re.S)


def logged_statements(log: str, app: str) -> list[str]:
    """Every statement the server logged (``log_statement = 'all'``) for ``application_name``
    ``app``: simple-protocol statements and extended-protocol executions alike."""
    out = []
    marks = list(_ENTRY.finditer(log))
    for i, mark in enumerate(marks):
        if mark.group(2) != app:
            continue
        end = marks[i + 1].start() if i + 1 < len(marks) else len(log)
        body = log[mark.end():end]
        found = _STATEMENT.match(body)
        if found:
            out.append(body[found.end():].strip())
    return out


# -- distinct client addresses -----------------------------------------------------------------


class AddressRelay:
    """A TCP relay on 127.0.0.1 whose outgoing connections to the server come from a different
    loopback address each (127.1.0.1, 127.1.0.2, ...): all of 127/8 is local on Linux, so the
    server sees that many client hosts without network namespaces. Allow them in pg_hba with
    ``host all all 127.0.0.0/8 trust``."""

    def __init__(self, server_port: int, first: str = "127.1.0.1") -> None:
        self.server_port = server_port
        self._next = int(ipaddress.IPv4Address(first))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="address-relay")
        self._server: asyncio.base_events.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0
        self.sources_used = 0

    def start(self) -> AddressRelay:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=1024),
            self._loop).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def _source(self) -> str:
        while True:
            addr = ipaddress.IPv4Address(self._next)
            self._next += 1
            if str(addr).split(".")[-1] not in ("0", "255"):
                self.sources_used += 1
                return str(addr)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.server_port, local_addr=(self._source(), 0))
        except OSError:
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._pipes):
                task.cancel()
            await asyncio.gather(*self._pipes, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> AddressRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

