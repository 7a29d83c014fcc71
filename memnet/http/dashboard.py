"""The dashboard: one page (static/, no CDN) and the JSON it polls under /api/ (every /api/ route
needs the token, memnet/http/guard.py).

    GET  /api/overview          identity, addresses, store, services, the model, the API
    GET  /api/peers             connected peers
    GET  /api/cubes?kind=&author=&tag=&pinned=   stored cubes, newest first
    GET  /api/cubes/{cid}       manifest, lineage (parents, supersedes, children here), pin, stats
    POST /api/cubes/{cid}/pin | /unpin | /verify
    GET  /api/fetches           gets in flight: bytes done of total
    GET  /api/reuse             KV reuse per generation: tokens reused, seconds saved
    GET  /api/audit?last=N      the audit log, newest last
    GET  /api/trust             the trust policy
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from memnet import render
from memnet.cube import cid, keys
from memnet.daemon.commands import Table
from memnet.errors import MemnetError, NotFoundError, UsageError
from memnet.governance import audit
from memnet.home import Node
from memnet.http.openai_schema import error_body

STATIC = Path(__file__).parent / "static"
MAX_LIST = 500
KINDS = ("plaintext", "activation", "parameter")


def _error(exc: BaseException) -> JSONResponse:
    status, body = error_body(exc)
    return JSONResponse(body, status_code=status)


class Dashboard:
    def __init__(self, node: Node, commands: Table, engine_info: Callable[[], dict], fetches: Callable[[], list],
                 api: dict[str, Any]):
        self.node, self.commands, self.engine_info, self.fetches, self.api = node, commands, engine_info, fetches, api

    def routes(self) -> list[Any]:
        api = [("/api/overview", self.overview), ("/api/peers", self.peers), ("/api/cubes", self.cubes),
               ("/api/cubes/{cube}", self.cube), ("/api/fetches", self.in_flight), ("/api/reuse", self.reuse),
               ("/api/audit", self.audit_log), ("/api/trust", self.trust)]
        return ([Route("/", self.page, methods=["GET"])]
                + [Route(path, _json(handler), methods=["GET"]) for path, handler in api]
                + [Route("/api/cubes/{cube}/{action}", _json(self.act), methods=["POST"]),
                   Mount("/static", StaticFiles(directory=STATIC), name="static")])

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store",
                                                            "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"})

    async def overview(self, request: Request) -> Any:
        status = await self.commands.run("status", {})
        return {"node": {k: status[k] for k in ("peer_id", "pid", "addrs", "uptime", "connected", "routing_table",
                                                  "providing", "served_bytes", "services", "cubes", "bytes")
                         if k in status},
                "author": keys.peer_id(self.node.author), "model": self.engine_info(), "api": self.api,
                "time": time.time()}

    async def peers(self, request: Request) -> Any:
        return await self.commands.run("peers", {})

    async def cubes(self, request: Request) -> Any:
        q = request.query_params
        kind = q.get("kind") or None
        if kind is not None and kind not in KINDS:
            raise UsageError(f"kind: one of {', '.join(KINDS)}")
        author = keys_from(q.get("author")) if q.get("author") else None
        pinned = {"yes": True, "no": False}.get(q.get("pinned", ""), None)
        entries = await trio.to_thread.run_sync(
            lambda: self.node.store.entries(kind=kind, author=author, tag=q.get("tag") or None, pinned=pinned))
        return {"total": len(entries), "cubes": [_row(e) for e in entries[:MAX_LIST]]}

    async def cube(self, request: Request) -> Any:
        cube_id = _cid(request.path_params["cube"])
        store = self.node.store
        entry = await trio.to_thread.run_sync(store.entry, cube_id)
        m = entry.manifest
        return {**_row(entry), "manifest": render.manifest_json(m, cube_id),
                "lineage": {"parents": [_ref(store, p) for p in m.parents],
                            "supersedes": _ref(store, m.supersedes) if m.supersedes else None},
                "stats": entry.stats}

    async def act(self, request: Request) -> Any:
        cube_id, action = _cid(request.path_params["cube"]), request.path_params["action"]
        store = self.node.store
        if action == "pin":
            await trio.to_thread.run_sync(store.pin, cube_id, "dashboard")
        elif action == "unpin":
            await trio.to_thread.run_sync(store.unpin, cube_id)
        elif action == "verify":
            started = time.perf_counter()
            try:
                await trio.to_thread.run_sync(store.verify, cube_id)
            except NotFoundError:
                raise
            except MemnetError as exc:
                return {"cube": cid.to_text(cube_id), "verified": False, "reason": str(exc)[:300]}
            return {"cube": cid.to_text(cube_id), "verified": True, "seconds": round(time.perf_counter() - started, 3)}
        else:
            raise NotFoundError(f"no action {action[:40]!r} (pin, unpin, verify)")
        return {"cube": cid.to_text(cube_id), "pinned": store.entry(cube_id).pin is not None}

    async def in_flight(self, request: Request) -> Any:
        return self.fetches()

    async def reuse(self, request: Request) -> Any:
        """Per generation (newest last): when, prompt tokens, tokens reused, seconds saved, TTFT."""
        entries = await trio.to_thread.run_sync(lambda: audit.entries(self.node.store, last=MAX_LIST))
        points = []
        for e in entries:
            extra = e.get("extra") or {}
            if "reused" not in extra:
                continue
            points.append({"time": (e.get("time") or 0) / 1e9, "kind": e.get("kind"),
                           "prompt_tokens": extra.get("prompt_tokens"), "reused": extra.get("reused"),
                           "saved_s": _number(extra.get("saved_s")), "ttft": _number(extra.get("ttft"))})
        return {"points": points, "reused_tokens": sum(p["reused"] or 0 for p in points),
                "saved_s": round(sum(p["saved_s"] or 0 for p in points), 3)}

    async def audit_log(self, request: Request) -> Any:
        try:
            last = min(int(request.query_params.get("last", "100")), MAX_LIST)
        except ValueError:
            raise UsageError("last: a whole number") from None
        entries = await trio.to_thread.run_sync(lambda: audit.entries(self.node.store, last=last))
        return [render._plain(_texts(e)) for e in entries]

    async def trust(self, request: Request) -> Any:
        return {"policy": self.node.config.trust.to_config(), "self": keys.peer_id(self.node.author)}


CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'"


def _json(handler: Callable) -> Callable:
    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await handler(request), headers={"Cache-Control": "no-store"})
        except Exception as exc:  # noqa: BLE001 - one error object, never a traceback page
            return _error(exc)
    return endpoint


def _cid(text: str) -> bytes:
    try:
        return cid.from_text(text)
    except MemnetError:
        raise UsageError(f"not a cube CID: {text[:80]!r}") from None


def keys_from(text: str) -> bytes:
    try:
        return keys.author_from_peer_id(text)
    except (MemnetError, ValueError):
        raise UsageError(f"author: not a PeerID: {text[:80]!r}") from None


def _row(entry: Any) -> dict[str, Any]:
    m = entry.manifest
    return {"cid": cid.to_text(entry.cube_id), "kind": m.kind, "author": keys.peer_id(m.author), "created": m.created,
            "size": m.size, "name": m.name, "version": m.version, "tags": list(m.tags),
            "description": m.description, "pinned": entry.pin is not None,
            "visibility": "private" if m.seal is not None else "public"}


def _number(value: Any) -> float | None:
    """A float the audit log keeps as a short string."""
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _ref(store: Any, cube_id: bytes) -> dict[str, Any]:
    here = store.has(cube_id)
    kind = store.manifest(cube_id).kind if here else None
    return {"cid": cid.to_text(cube_id), "here": here, "kind": kind}


def _texts(entry: dict[str, Any]) -> dict[str, Any]:
    """CIDs in an audit entry as text."""
    out = dict(entry)
    for cube in out.get("cubes") or []:
        if isinstance(cube.get("cid"), bytes):
            cube["cid"] = cid.to_text(cube["cid"])
        if isinstance(cube.get("author"), bytes):
            cube["author"] = keys.peer_id(cube["author"])
    return out
