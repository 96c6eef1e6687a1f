"""Build hook: the server's wheel carries what its entry points need from outside `app/`.

Copied into the build at build time from their one source in this repository (never
committed twice):

- clients/python/herald_client -> app/_bundled/herald_client  (`herald tail`)
- clients/js/src/*.js           -> app/static/lib/herald-client  (`/portal`'s JS client)
- migrations/ and alembic.ini   -> app/_bundled/migrations, app/_bundled/alembic.ini
                                   (`herald migrate` outside the clone)

An editable install (`pip install -e .`, the Makefile) copies nothing: the code finds
them in the clone (app/core/paths.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent

# (source in the repository, destination inside the built `app` package, files to take)
BUNDLES = [
    ("clients/python/herald_client", "_bundled/herald_client", ["*.py", "py.typed"]),
    ("clients/js/src", "static/lib/herald-client", ["*.js"]),
    ("migrations", "_bundled/migrations", ["env.py", "script.py.mako", "versions/*.py"]),
    (".", "_bundled", ["alembic.ini"]),
]


class BuildWithBundles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for source, dest, patterns in BUNDLES:
            src = ROOT / source
            if dest != "_bundled":  # no stale copy from an earlier build in build/
                shutil.rmtree(Path(self.build_lib) / "app" / dest, ignore_errors=True)
            files = sorted({f for pattern in patterns for f in src.glob(pattern)})
            if not files:
                raise SystemExit(f"setup.py: nothing to bundle from {source} "
                                 "(build from a full clone or its sdist)")
            for file in files:
                target = Path(self.build_lib) / "app" / dest / file.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)


setup(cmdclass={"build_py": BuildWithBundles})
