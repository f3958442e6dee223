"""The browser UI: ``web/`` at ``/`` and the Socket.io browser client at ``/vendor/socket.io/``.

Files are looked up inside their root only (no ``..``, no dot files, no ``node_modules``
outside the vendored client). ``ASRHUB_WEB_DIR`` points at another UI directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

WEB_DIR = web.AppKey("web_dir", Path)

DEFAULT_WEB_DIR = Path(__file__).resolve().parent.parent / "web"
VENDOR = {"socket.io": Path("node_modules") / "socket.io-client" / "dist"}
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".css": "text/css",
    ".html": "text/html",
}


def web_dir() -> Path:
    return Path(os.environ.get("ASRHUB_WEB_DIR") or DEFAULT_WEB_DIR)


def _file(root: Path, relative: str) -> Path:
    parts = [p for p in relative.split("/") if p]
    if any(p.startswith(".") or p == "node_modules" for p in parts):
        raise web.HTTPNotFound()
    path = root.joinpath(*parts)
    if path.is_dir():
        path = path / "index.html"
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise web.HTTPNotFound() from None
    if not path.is_file():
        raise web.HTTPNotFound()
    return path


def _response(path: Path) -> web.FileResponse:
    headers = {"Cache-Control": "no-cache"}
    content_type = CONTENT_TYPES.get(path.suffix)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return web.FileResponse(path, headers=headers)


async def vendor(request: web.Request) -> web.FileResponse:
    package = VENDOR.get(request.match_info["package"])
    if package is None:
        raise web.HTTPNotFound()
    return _response(_file(request.app[WEB_DIR] / package, request.match_info["path"]))


async def ui(request: web.Request) -> web.FileResponse:
    return _response(_file(request.app[WEB_DIR], request.match_info["path"]))


def setup(app: web.Application, root: Path | None = None) -> None:
    """Register last: ``/{path}`` catches every GET the other transports did not take."""
    app[WEB_DIR] = root or web_dir()
    app.router.add_get("/vendor/{package}/{path:.*}", vendor)
    app.router.add_get("/{path:.*}", ui)
