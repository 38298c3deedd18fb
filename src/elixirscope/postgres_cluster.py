"""A throwaway PostgreSQL cluster for the Phoenix sample app.

``initdb`` into a temporary directory, listening on 127.0.0.1 (a free port) and on a
Unix socket in that directory, trust authentication, removed when the context ends::

    with postgres_cluster() as db:
        db.connect_options   # what Postgrex needs

The server runs as the ``postgres`` user when this process is root (PostgreSQL
refuses to run as root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from elixirscope.errors import ElixirScopeError

__all__ = ["PostgresCluster", "PostgresUnavailable", "find_postgres_bin", "free_loopback_port",
           "postgres_cluster"]

_START_TIMEOUT = 60.0


class PostgresUnavailable(ElixirScopeError):
    """PostgreSQL is not installed, or the throwaway cluster could not start."""


@dataclass(frozen=True)
class PostgresCluster:
    port: int
    socket_dir: Path
    user: str
    database: str

    @property
    def connect_options(self) -> dict[str, object]:
        """Postgrex options for the cluster's database (over TCP on loopback)."""
        return {"hostname": "127.0.0.1", "port": self.port, "username": self.user,
                "database": self.database}


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, newest version first, or None."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                            key=lambda path: int(Path(path).parent.name)
                            if Path(path).parent.name.isdigit() else 0, reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_owner(command: list[str], owner: str | None) -> list[str]:
    if owner is None:
        return command
    return ["runuser", "-u", owner, "--", *command]


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            errors="replace", timeout=_START_TIMEOUT, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise PostgresUnavailable(f"{what} failed: " + " / ".join(tail))


@contextlib.contextmanager
def postgres_cluster(database: str = "shop") -> Iterator[PostgresCluster]:
    """Start a throwaway cluster; stop it and remove its files on exit."""
    bindir = find_postgres_bin()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (apt-get install postgresql; ./dev setup does).")
    owner: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable(
                "Running as root, and there is no `postgres` user to run PostgreSQL as."
            ) from None
        owner = "postgres"
    root = Path(tempfile.mkdtemp(prefix="elixirscope-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if owner is not None:
        entry = pwd.getpwnam(owner)
        for path in (root, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    user = owner or pwd.getpwuid(os.geteuid()).pw_name
    port = free_loopback_port()
    started = False
    try:
        _run(_as_owner([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", user,
                        "--no-sync", "-E", "UTF8"], owner), "initdb")
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        _run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                        str(root / "server.log"), "-w", "-t", str(int(_START_TIMEOUT)), "start"],
                       owner), "Starting PostgreSQL")
        started = True
        _wait_accepting(port)
        yield PostgresCluster(port=port, socket_dir=sockets, user=user, database=database)
    finally:
        if started:
            with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
                _run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                "-w", "stop"], owner), "Stopping PostgreSQL")
        shutil.rmtree(root, ignore_errors=True)


def _wait_accepting(port: int) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise PostgresUnavailable(
                    f"PostgreSQL did not accept connections on port {port}.") from None
            time.sleep(0.1)
