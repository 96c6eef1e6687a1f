"""A private PostgreSQL cluster: initdb + pg_ctl as the postgres user, in a temp dir, on a
free port — never the shared server, which other runs use. For fault tests (stopped and
started at will) and for the bench (a server with settings of its own)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testkit.processes import free_port


class NoServerBinaries(RuntimeError):
    """PostgreSQL's server binaries, or root to run them as the postgres user, are missing."""


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found or shutil.which("runuser") is None or os.geteuid() != 0:
        raise NoServerBinaries("needs PostgreSQL's server binaries and root "
                               "(runuser -u postgres)")
    return found[-1]


@dataclass
class PrivatePostgres:
    """A throwaway cluster owned by the postgres user; stopped and started at will."""

    data: Path
    port: int
    settings: Mapping[str, str] = field(default_factory=dict)  # postgres -c name=value

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", _bin("pg_ctl"), "-D",
                        str(self.data / "db"), *argv], check=True, timeout=60,
                       capture_output=True)

    def start(self) -> None:
        options = " ".join(f"-c {name}={value}" for name, value in self.settings.items())
        self.ctl("-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 "
                 f"{options}".rstrip(), "-l", str(self.data / "log"), "-w", "start")

    def stop(self) -> None:
        self.ctl("-m", "fast", "-w", "stop")

    def discard(self) -> None:
        """Stop it at once (no shutdown checkpoint) and delete its files."""
        subprocess.run(["runuser", "-u", "postgres", "--", _bin("pg_ctl"), "-D",
                        str(self.data / "db"), "-m", "immediate", "stop"], timeout=60,
                       capture_output=True)
        shutil.rmtree(self.data, ignore_errors=True)


def start_private(settings: Mapping[str, str] | None = None) -> PrivatePostgres:
    """A new cluster, started with `settings`; `discard()` it when done. Raises
    NoServerBinaries where it cannot run."""
    initdb = _bin("initdb")
    data = Path(tempfile.mkdtemp(prefix="herald-pg-"))
    shutil.chown(data, "postgres", "postgres")
    try:
        subprocess.run(["runuser", "-u", "postgres", "--", initdb, "-D", str(data / "db"),
                        "-A", "trust", "-U", "postgres", "--no-sync"], check=True,
                       timeout=120, capture_output=True)
        cluster = PrivatePostgres(data, free_port(), dict(settings or {}))
        cluster.start()
    except BaseException:
        shutil.rmtree(data, ignore_errors=True)
        raise
    return cluster


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    try:
        cluster = start_private()
    except NoServerBinaries as exc:
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.discard()
