"""A throwaway PostgreSQL cluster of Debian's or npm's binaries (any major: see ``find_bindir``).

``initdb`` refuses to run as root, so as root the cluster runs as the ``postgres`` user in a
temporary directory that user owns; as anyone else it runs as that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from ..errors import AgentError

_DEBIAN = Path("/usr/lib/postgresql")
DEFAULT_CACHE = "/var/cache/pgconn-agent"


def _cache() -> Path:
    """Where scripts/fetch-postgres.sh unpacks npm's servers: ``<cache>/postgresql/<version>``."""
    return Path(os.environ.get("PGCONN_CACHE_DIR") or DEFAULT_CACHE) / "postgresql"


def _release(path: Path) -> tuple[int, ...]:
    """``16`` or ``16.14.0-beta.17`` as comparable numbers (pre-release tags ignored)."""
    return tuple(int(part) for part in path.name.split("-")[0].split(".") if part.isdigit())


def installed_bindirs() -> dict[int, Path]:
    """Major version -> bin directory of every server found: Debian's packages, then the
    npm servers fetched by scripts/fetch-postgres.sh (the newest release of each major)."""
    found: dict[int, Path] = {}
    cached = _cache().glob("*/native/bin") if _cache().is_dir() else iter(())
    for bindir in sorted(cached, key=lambda b: _release(b.parent.parent)):
        if (bindir / "postgres").exists():
            found[_release(bindir.parent.parent)[0]] = bindir
    debian = _DEBIAN.glob("*/bin") if _DEBIAN.is_dir() else iter(())
    for bindir in debian:
        if (bindir / "postgres").exists() and _release(bindir.parent):
            found[_release(bindir.parent)[0]] = bindir
    return found


def find_bindir(major: int | None = None) -> Path:
    """The bin directory of PostgreSQL ``major`` (default: the newest Debian-installed server;
    ``PGCONN_PG_BINDIR`` overrides that default)."""
    override = os.environ.get("PGCONN_PG_BINDIR")
    if major is None and override:
        return Path(override)
    found = installed_bindirs()
    if major is None:
        debian = [v for v, b in found.items() if b.is_relative_to(_DEBIAN)]
        if debian:
            return found[max(debian)]
        raise AgentError("no PostgreSQL server binaries under /usr/lib/postgresql "
                         "(run scripts/setup.sh, or set PGCONN_PG_BINDIR)")
    if major not in found:
        raise AgentError(f"no PostgreSQL {major} server: found "
                         f"{', '.join(map(str, sorted(found))) or 'none'} "
                         f"(scripts/fetch-postgres.sh fetches 13-18 into {_cache()})")
    return found[major]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """Start with ``start()`` (or as a context manager); ``stop()`` removes everything.

    ``major`` picks a server version (see ``find_bindir``); by default Debian's newest.
    """

    def __init__(self, *, max_connections: int = 100, superuser_reserved: int = 3,
                 settings: Mapping[str, str] | None = None, hba: list[str] | None = None,
                 port: int | None = None, major: int | None = None) -> None:
        self.port = port or free_port()
        self.bindir = find_bindir(major)
        self.settings = {
            "max_connections": str(max_connections),
            "superuser_reserved_connections": str(superuser_reserved),
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_locks_per_transaction": "64",
            **(settings or {}),
        }
        self.hba = hba or ["local all all trust", "host all all 127.0.0.1/32 trust"]
        self.tmp: Path | None = None
        self._run_as = "postgres" if os.geteuid() == 0 else None

    @property
    def datadir(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.tmp is not None
        return self.tmp

    def dsn(self, *, user: str = "postgres", dbname: str = "postgres", via: str = "tcp",
            **extra: Any) -> str:
        host = "127.0.0.1" if via == "tcp" else str(self.socket_dir)
        return conninfo.make_conninfo("", host=host, port=self.port, user=user, dbname=dbname,
                                      **extra)

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self._run_as, "--", *args] if self._run_as else list(args)

    def _chown(self, path: Path) -> None:
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def start(self) -> LocalServer:
        self.tmp = Path(tempfile.mkdtemp(prefix="pgconn-pg-"))
        self.tmp.chmod(0o755)
        self._chown(self.tmp)
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                  "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        conf = "\n".join(f"{k} = {v}" for k, v in self.settings.items())
        conf += f"\nunix_socket_directories = '{self.socket_dir}'\n"
        with open(self.datadir / "postgresql.auto.conf", "a", encoding="utf-8") as f:
            f.write(conf)
        (self.datadir / "pg_hba.conf").write_text("\n".join(self.hba) + "\n", encoding="utf-8")
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.tmp / "server.log"))
        return self

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args)

    def _run(self, *args: str) -> None:
        result = subprocess.run(self._cmd(*args), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = ""
            if self.tmp and (self.tmp / "server.log").exists():
                log = (self.tmp / "server.log").read_text(errors="replace")[-2000:]
            raise AgentError(f"{Path(args[0]).name} failed: {result.stderr.strip()} {log}")

    def stop(self, mode: str = "immediate") -> None:
        if self.tmp is None:
            return
        with contextlib.suppress(AgentError):
            self._pg_ctl("stop", "-m", mode, "-w")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "immediate", "-w", "-t", "60", "-l",
                     str(self.datadir.parent / "server.log"))

    def execute(self, *statements: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run statements as the superuser over the socket; returns the last one's rows."""
        rows: list[tuple[Any, ...]] = []
        with psycopg.connect(self.dsn(via="unix", dbname=dbname), autocommit=True) as conn:
            for sql in statements:
                cur = conn.execute(sql.encode())
                rows = cur.fetchall() if cur.description else []
        return rows

    def log_text(self) -> str:
        assert self.tmp is not None
        return (self.tmp / "server.log").read_text(errors="replace")

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
