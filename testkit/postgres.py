"""A private PostgreSQL cluster for fault tests: initdb + pg_ctl as the postgres user.

In a temp dir, on a free port — never the shared server, which other runs use.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.processes import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found or shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL's server binaries and root (runuser -u postgres)")
    return found[-1]


@dataclass
class PrivatePostgres:
    """A throwaway cluster owned by the postgres user; stopped and started at will."""

    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", _bin("pg_ctl"), "-D",
                        str(self.data / "db"), *argv], check=True, timeout=60,
                       capture_output=True)

    def start(self) -> None:
        self.ctl("-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1",
                 "-l", str(self.data / "log"), "-w", "start")

    def stop(self) -> None:
        self.ctl("-m", "fast", "-w", "stop")


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    initdb = _bin("initdb")
    data = Path(tempfile.mkdtemp(prefix="herald-pg-"))
    shutil.chown(data, "postgres", "postgres")
    subprocess.run(["runuser", "-u", "postgres", "--", initdb, "-D", str(data / "db"), "-A",
                    "trust", "-U", "postgres", "--no-sync"], check=True, timeout=120,
                   capture_output=True)
    cluster = PrivatePostgres(data, free_port())
    cluster.start()
    try:
        yield cluster
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", _bin("pg_ctl"), "-D",
                        str(data / "db"), "-m", "immediate", "stop"], timeout=60,
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)
