"""``GET /``: the live page, one self-contained HTML document built from ``page/``.

``index.html``, ``style.css`` and ``app.js`` are kept apart for editing and inlined here once, so the
page is one request and works offline (no CDN, no chart library: the charts are drawn on a canvas by
``app.js``). The Content-Security-Policy allows exactly that inline script and style (by hash) and
requests to this server: even a producer's label that slipped into markup could run nothing.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from importlib.resources import files

HTML = "text/html; charset=utf-8"


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def page() -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """The document and its headers (Content-Security-Policy, no caching of a page under work)."""
    folder = files("streamlearn.serving") / "page"
    style = (folder / "style.css").read_text(encoding="utf-8")
    script = (folder / "app.js").read_text(encoding="utf-8")
    html = (folder / "index.html").read_text(encoding="utf-8")
    html = html.replace("/*STYLE*/", style, 1).replace("/*SCRIPT*/", script, 1)
    csp = (
        f"default-src 'none'; script-src {_sha256(script)}; style-src {_sha256(style)}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    headers = (
        ("Content-Security-Policy", csp),
        ("Cache-Control", "no-cache"),
        ("X-Content-Type-Options", "nosniff"),
    )
    return html.encode(), headers
