"""Who may use the HTTP face (ASGI middleware, in front of every route).

- Host: only the names this server is reached by (its bind address, and localhost on loopback)
  are answered, so a web page cannot reach the loopback API through DNS rebinding.
- Token: the dashboard's data and actions (/api/) always need `Authorization: Bearer TOKEN`
  (the token is in HOME/http_token, 0600; `memnet dashboard` prints a URL carrying it). The
  OpenAI API (/v1/) needs it on any bind address but loopback.
- Cross-site requests: a state-changing request must be JSON or carry the token header, and an
  Origin, when sent, must be this server: a browser cannot send either across sites without a
  CORS preflight, and no route answers one.
The page and its assets (/, /static/) hold no data and need nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
SAFE_METHODS = {"GET", "HEAD"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The host part of a Host header or an origin's netloc, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    def __init__(self, app: Any, token: str, bind_host: str, extra_hosts: tuple[str, ...] = ()):
        self.app, self.token = app, token
        self.loopback = is_loopback(bind_host)
        self.any_host = bind_host in ("0.0.0.0", "::", "")
        self.hosts = {bind_host.lower(), *(h.lower() for h in extra_hosts)} | (LOOPBACK_NAMES if self.loopback else set())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self.check(scope["method"], scope["path"], headers)
        if refusal is None:
            return await self.app(scope, receive, send)
        status, message = refusal
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error" if status != 401 else
                                     "authentication_error", "param": None, "code": None}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                    + ([(b"www-authenticate", b"Bearer")] if status == 401 else [])})
        await send({"type": "http.response.body", "body": body})

    def check(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
        """None to let the request through, else (status, one-line reason)."""
        if not self.any_host and host_name(headers.get("host", "")) not in self.hosts:
            return 421, "this server does not answer to that Host name"
        origin = headers.get("origin")
        if origin is not None and method not in SAFE_METHODS and origin != "null":
            if self.any_host or host_name(urlsplit(origin).netloc) in self.hosts:
                pass
            else:
                return 403, "cross-site request refused"
        if origin == "null" and method not in SAFE_METHODS:
            return 403, "cross-site request refused"
        needs_token = path.startswith("/api/") or (path.startswith("/v1/") and not self.loopback)
        if needs_token and not self.has_token(headers):
            return 401, "a bearer token is required (memnet dashboard prints the URL with it)"
        return None

    def has_token(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())
