"""The API docs pages, /docs (Swagger UI) and /redoc (ReDoc), with every asset served from here.

FastAPI's own pages load their JavaScript, CSS, favicon and (ReDoc) Google fonts from CDNs, so on
a machine without internet they are blank. The same files ship inside the `fastapi-offline`
package (Swagger UI: Apache-2.0, ReDoc: MIT); this module serves them at /docs/assets/ and points
FastAPI's page builders there. Paths honour the ASGI root_path, for a server behind a prefix."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL, REDOC_URL, ASSETS_URL = "/docs", "/redoc", "/docs/assets"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS = files("fastapi_offline") / "static"  # swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png


def install_docs(app: FastAPI) -> None:
    """Add GET/HEAD /docs, /redoc and Swagger's OAuth2 redirect, and the assets they load, to
    `app` (made with docs_url=None, redoc_url=None so FastAPI adds no CDN pages of its own)."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    def page(path: str):
        return app.api_route(path, methods=["GET", "HEAD"], include_in_schema=False, response_class=HTMLResponse)

    @page(DOCS_URL)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_URL, swagger_ui_parameters=app.swagger_ui_parameters)

    @page(OAUTH2_REDIRECT_URL)
    async def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @page(REDOC_URL)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url, title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png", with_google_fonts=False)
