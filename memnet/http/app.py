"""The ASGI application: the OpenAI API and the dashboard behind the guard."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from memnet.http.dashboard import Dashboard
from memnet.http.guard import Guard
from memnet.http.openai_api import OpenAIApi


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": {"message": f"no route {request.method} {request.url.path[:100]}",
                                   "type": "invalid_request_error", "param": None, "code": "not_found"}},
                        status_code=getattr(exc, "status_code", 404))


async def _crashed(request: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback; the client gets OpenAI's error object, never a trace
    return JSONResponse({"error": {"message": "internal error (see the daemon's log)", "type": "server_error",
                                   "param": None, "code": None}}, status_code=500)


def build(api: OpenAIApi, dashboard: Dashboard, token: str, bind_host: str) -> Any:
    app = Starlette(routes=api.routes() + dashboard.routes(),
                    exception_handlers={404: _not_found, 405: _not_found, Exception: _crashed})
    return Guard(app, token, bind_host)
