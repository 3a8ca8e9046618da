"""/docs and /redoc render in a real headless browser with no internet: every asset is the server's own.

Debian's Chromium loads each page from a real `hearth serve` process and dumps the DOM once the
page's JavaScript has run; the operations are there only if Swagger UI / ReDoc loaded and rendered
the OpenAPI schema. The browser resolves no host but 127.0.0.1, so a page that needs a CDN renders
nothing, wherever the test runs; the control test shows that on FastAPI's stock page. Without
Chromium the tests fail (CI installs it, see .ci/run) unless HEARTH_SKIP_BROWSER=1.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import free_port

CHROMIUM = Path("/usr/bin/chromium")
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models")


@pytest.fixture(scope="module")
def browser() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("HEARTH_SKIP_BROWSER") == "1":
            pytest.skip("HEARTH_SKIP_BROWSER=1 and no Chromium")
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (or set HEARTH_SKIP_BROWSER=1 to skip)")
    return CHROMIUM


def render(browser: Path, url: str) -> str:
    """The DOM of `url` after its scripts ran (10 s of virtual time), in a fresh profile, offline."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [str(browser), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no CDN, even with internet
             f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", url],
            check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-3000:]
    return proc.stdout


def swagger_operations(dom: str) -> set[str]:
    """The paths of the operation blocks Swagger UI rendered (its JS writes them; the page has none)."""
    return set(re.findall(r'class="opblock-summary-path"[^>]*data-path="([^"]+)"', dom))


def redoc_operations(dom: str) -> set[str]:
    """The paths beside the HTTP-verb badges ReDoc rendered for each operation."""
    return set(re.findall(r'class="[^"]*http-verb \w+">\w+</span>\s*<span[^>]*>([^<]+)</span>', dom))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_reference_nothing_outside_the_server(server, page):
    r = httpx.get(server.url + page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.findall(r"https?://[^\s\"'<>]+", r.text), "the page loads something from the internet"
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
    for asset in assets:
        got = httpx.get(server.url + asset)
        assert got.status_code == 200 and len(got.content) > 1000, asset
    assert httpx.head(server.url + page).status_code == 200
    assert httpx.get(server.url + "/docs/assets/nope.js").status_code == 404


def test_swagger_ui_renders_every_route(server, browser):
    dom = render(browser, server.url + "/docs")
    assert "Failed to load API definition" not in dom
    assert set(ROUTES) <= swagger_operations(dom), swagger_operations(dom)


def test_redoc_renders_every_route(server, browser):
    dom = render(browser, server.url + "/redoc")
    assert set(ROUTES) <= redoc_operations(dom), redoc_operations(dom)


STOCK_APP = """
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
app.post("/v1/completions")(lambda: None)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def test_control_the_stock_cdn_pages_render_nothing_here(browser):
    # the guard above is real: FastAPI's own CDN-loaded pages, in the same browser, show no operation
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", STOCK_APP, str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                assert "cdn.jsdelivr.net" in httpx.get(url + "/docs").text
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "stock app did not start"
                time.sleep(0.1)
        assert not swagger_operations(render(browser, url + "/docs"))
        assert not redoc_operations(render(browser, url + "/redoc"))
    finally:
        proc.terminate()
        proc.wait(10)
