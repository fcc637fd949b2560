"""``/console``: the browser console, static files shipped in the package (``app/console/``).

The page is a client of the public API like any other: it calls the same endpoints with the key
a person types (kept in the tab's ``sessionStorage``, never in a URL) and reads the stream with
``EventSource``. This module only serves its files, from a fixed list: no path from the request
reaches the filesystem.

Because the page handles an API key, every file goes out with a strict Content-Security-Policy:
scripts and styles from this origin only (no inline script, no ``eval``), requests to this
origin only, no forms submitted anywhere, never framed. A key typed into the page can then only
travel to this service's API.
"""

from importlib.resources import files

import anyio
from fastapi import APIRouter, HTTPException, status
from fastapi.responses import Response

from app.storable import printable

router = APIRouter(tags=["console"], include_in_schema=False)

#: The console's files and their media types; nothing else under /console is served.
ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "task-stream.js": "text/javascript; charset=utf-8",
    "task-view.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
PAGE = "index.html"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Revalidated on every load: a deploy's new files are used at once.
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return (files("app") / "console" / name).read_bytes()


async def _file(name: str, media_type: str) -> Response:
    """The file as it is now (read per request, off the event loop: an edited file is served
    at once, and the console is not where requests per second matter)."""
    body = await anyio.to_thread.run_sync(_read, name)
    return Response(body, media_type=media_type, headers=SECURITY_HEADERS)


@router.get("/console")
async def console_page() -> Response:
    return await _file(PAGE, "text/html; charset=utf-8")


@router.get("/console/{name}")
async def console_asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        shown = printable(name, limit=64)
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no console file {shown!r}")
    return await _file(name, media_type)
