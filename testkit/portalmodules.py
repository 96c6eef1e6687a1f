"""What a browser loads for /portal: its import map and every module reachable from
portal.js, followed as the browser does (relative URLs, bare specifiers through the map)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpx

IMPORTS = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(\s*)['"]([^'"]+)['"]""")
IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.S)


@dataclass
class PortalModules:
    mapped: dict[str, str]  # the page's import map
    served: set[str] = field(default_factory=set)  # module URLs loaded, 200 and JavaScript
    failed: list[str] = field(default_factory=list)  # module URLs that were not
    unmapped: list[tuple[str, str]] = field(default_factory=list)  # (module, bare specifier)


def walk(get: Callable[[str], httpx.Response]) -> PortalModules:
    """Load /portal/ and every module it imports, transitively (`get(path)` answers a path).
    Vendored builds (/portal/vendor/) are loaded but not read: they are self-contained."""
    [importmap] = IMPORT_MAP.findall(get("/portal/").text)
    found = PortalModules(json.loads(importmap)["imports"])
    todo = ["/portal/portal.js"]
    while todo:
        url = todo.pop()
        if url in found.served or url in found.failed:
            continue
        response = get(url)
        if response.status_code != 200 or "javascript" not in response.headers.get(
                "content-type", ""):
            found.failed.append(url)
            continue
        found.served.add(url)
        if url.startswith("/portal/vendor/"):
            continue
        for specifier in IMPORTS.findall(response.text):
            if specifier.startswith(("./", "../", "/")):
                todo.append(urljoin(url, specifier))
            elif specifier in found.mapped:
                todo.append(found.mapped[specifier])
            else:
                found.unmapped.append((url, specifier))
    return found
