"""`make dev`: demo data, a demo token and where to connect, then web + worker + beat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def main() -> int:
    seeded = json.loads(subprocess.run([BIN / "herald", "seed", "--json"], check=True,
                                       capture_output=True, text=True).stdout)

    def token(user: int) -> str:
        return subprocess.run([BIN / "herald", "token", "--user", str(user), "--ttl", "12h"],
                              check=True, capture_output=True, text=True).stdout.strip()

    port = os.environ.get("PORT", "8000")
    admin, client = token(seeded["admin"]), token(seeded["client"])
    print(f"""
Herald is starting on http://127.0.0.1:{port}
  Socket.IO  ws://127.0.0.1:{port}/socket.io/   (auth: {{"token": "<token>"}})
  HTTP API   http://127.0.0.1:{port}/api        OpenAPI: http://127.0.0.1:{port}/docs
  demo project {seeded['project']}, ticket {seeded['ticket']}
  Portal     http://127.0.0.1:{port}/portal/   (pick a demo user; two windows to chat)

  admin token  (user {seeded['admin']}):  {admin}
  client token (user {seeded['client']}): {client}

Try it (in another terminal):
  .venv/bin/herald tail project-{seeded['project']} user-{seeded['client']} --token {client}
  curl -X PATCH http://127.0.0.1:{port}/api/projects/{seeded['project']} \\
       -H "Authorization: Bearer {admin}" -H 'Content-Type: application/json' \\
       -d '{{"progress": 60, "status": "active"}}'
""", flush=True)
    honcho = BIN / "honcho"
    # The Procfile names uvicorn, celery and alembic: find them in this virtualenv.
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    # honcho hands each process its own PORT from a base port; the web, listed first, gets ours.
    os.execv(honcho, [str(honcho), "start", "-f", "Procfile", "-p", port, "web", "worker", "beat"])


if __name__ == "__main__":
    sys.exit(main())
