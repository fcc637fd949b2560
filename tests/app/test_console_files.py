"""The console's files: served from the package, each with the strict CSP, and nothing else.

The page handles an API key, so it must hold no inline script or handler (the CSP would block
them, and allowing them would let injected markup run), and every file it loads must be one
the router serves.
"""

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from importlib.resources import files

import httpx
import pytest
from fastapi import FastAPI

from app.routes import console

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(console.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as client:
        yield client


class _PageScan(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self.inline_scripts = 0
        self.handlers: list[str] = []
        self.names: list[str] = []
        self._in_script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if "name" in values and tag in {"input", "select", "textarea", "button"}:
            self.names.append(f"{tag}#{values.get('id')}")
        if tag == "script":
            if values.get("src"):
                self.loaded.append(values["src"] or "")
            else:
                self._in_script_without_src = True
        if tag == "link" and values.get("href"):
            self.loaded.append(values["href"] or "")
        if "style" in values:
            self.handlers.append(f"style on {tag}")

    def handle_data(self, data: str) -> None:
        if self._in_script_without_src and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script_without_src = False


async def test_console_page_is_served_with_a_strict_content_security_policy(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/console")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["form-action"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_console_page_has_no_inline_script_and_loads_only_served_files(
    client: httpx.AsyncClient,
) -> None:
    scan = _PageScan()
    scan.feed((await client.get("/console")).text)

    assert scan.inline_scripts == 0
    assert scan.handlers == [], "inline handlers and styles are refused by the CSP"
    assert scan.names == [], "a named field would be sent by a form submitted without script"
    for path in scan.loaded:
        assert path.startswith("console/"), path
        response = await client.get(f"/{path}")
        assert response.status_code == 200, path
        assert "content-security-policy" in response.headers


async def test_console_modules_import_only_served_files(client: httpx.AsyncClient) -> None:
    for name, media_type in console.ASSETS.items():
        response = await client.get(f"/console/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"] == media_type
        for imported in re.findall(r'from "\./([^"]+)"', response.text):
            assert imported in console.ASSETS, f"{name} imports {imported}, which is not served"


def test_every_console_file_in_the_package_is_served() -> None:
    shipped = {entry.name for entry in (files("app") / "console").iterdir()}

    assert shipped == {*console.ASSETS, console.PAGE}


@pytest.mark.parametrize(
    "path", ["/console/secret.txt", "/console/..%2Fmain.py", "/console/%2e%2e%2fsettings.py"]
)
async def test_console_serves_nothing_but_its_files(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 404
    assert "detail" in response.json()
