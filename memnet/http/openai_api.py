"""The OpenAI-compatible endpoints: GET /v1/models, POST /v1/chat/completions, POST
/v1/completions, with server-sent events for stream=true. The replies carry OpenAI's fields
(usage.prompt_tokens_details.cached_tokens is the prefix memnet reused) and a "memnet"
object: tokens reused, where from, the cube, TTFT, time queued, the fetch decision."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from memnet.cube import cid
from memnet.errors import UsageError
from memnet.http import openai_schema as schema
from memnet.http.stops import StopText
from memnet.scheduler.engine import Done, Engine, Failed, Token

MAX_BODY = 1 << 20   # bytes of JSON in a request (a 2048-token prompt is ~10 KB)


def error(exc: BaseException) -> JSONResponse:
    status, body = schema.error_body(exc)
    return JSONResponse(body, status_code=status)


async def read_json(request: Request) -> Any:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise UsageError("the request body must be JSON (Content-Type: application/json)")
    body = b""
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_BODY:
            raise UsageError(f"the request body is over {MAX_BODY} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UsageError("the request body is not valid JSON") from None


class OpenAIApi:
    def __init__(self, engine: Engine):
        self.engine = engine

    def routes(self) -> list[Route]:
        return [Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/models/{name:path}", self.model, methods=["GET"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"])]

    def served(self) -> list[str]:
        """The names the engine's model answers to: its pinned name and fingerprint prefix."""
        pinned = self.engine.pinned
        return [pinned.name, pinned.short] if pinned is not None else []

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model(n) for n in self.served()[:1]]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name.partition("+")[0] not in self.served():
            return error(schema.ModelNotFound(f"model {name[:80]!r} is not served here"))
        return JSONResponse(self._model(name))

    def _model(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.engine.started, "owned_by": "memnet"}

    async def chat(self, request: Request) -> Response:
        return await self._answer(request, schema.chat, "chat.completion", "chatcmpl-")

    async def completions(self, request: Request) -> Response:
        return await self._answer(request, schema.completion, "text_completion", "cmpl-")

    async def _answer(self, request: Request, parse, kind: str, prefix: str) -> Response:
        try:
            parsed = parse(await read_json(request), self.served())
            ticket = await self.engine.submit(parsed.job)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI error object
            return error(exc)
        reply = _Reply(kind, prefix + secrets.token_hex(12), parsed, ticket)
        if parsed.stream:
            return StreamingResponse(reply.events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await reply.whole()


class _Reply:
    """One answer, whole or as a stream of chunks."""

    def __init__(self, kind: str, reply_id: str, parsed: schema.Request, ticket: Any):
        self.kind, self.id, self.parsed, self.ticket = kind, reply_id, parsed, ticket
        self.chat = kind == "chat.completion"
        self.created = int(time.time())
        self.stops = StopText(parsed.stops)

    async def _run(self) -> AsyncIterator[tuple[str, Any]]:
        """("text", delta) ... then ("done", Done) or ("error", exception)."""
        try:
            async for event in self.ticket:
                if isinstance(event, Token):
                    delta, stopped = self.stops.feed(event.text)
                    if delta:
                        yield "text", delta
                    if stopped:
                        self.ticket.stop()  # the worker ends the answer at its next step
                elif isinstance(event, Done):
                    tail = self.stops.feed(event.generation.text)[0] + self.stops.flush()
                    if tail:
                        yield "text", tail
                    yield "done", event
                    return
                elif isinstance(event, Failed):
                    yield "error", event.error
                    return
            yield "error", RuntimeError("the engine dropped the request")
        finally:
            self.ticket.close()

    async def whole(self) -> Response:
        text, done = "", None
        async for what, value in self._run():
            if what == "text":
                text += value
            elif what == "error":
                return error(value)
            else:
                done = value
        finish = "stop" if self.stops.stopped else done.generation.finish
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                   "logprobs": None} if self.chat else
                  {"index": 0, "text": text, "finish_reason": finish, "logprobs": None})
        return JSONResponse({"id": self.id, "object": self.kind, "created": self.created, "model": self.parsed.model,
                             "choices": [choice], "usage": self._usage(done), "memnet": self._extension(done)})

    async def events(self) -> AsyncIterator[str]:
        kind = self.kind + (".chunk" if self.chat else "")
        if self.chat:
            yield self._sse(kind, [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        async for what, value in self._run():
            if what == "text":
                choice = {"index": 0, "delta": {"content": value}} if self.chat else {"index": 0, "text": value}
                yield self._sse(kind, [{**choice, "finish_reason": None}])
            elif what == "error":
                status, body = schema.error_body(value)
                yield f"data: {json.dumps(body)}\n\n"
                return
            else:
                finish = "stop" if self.stops.stopped else value.generation.finish
                last = {"index": 0, "delta": {}} if self.chat else {"index": 0, "text": ""}
                yield self._sse(kind, [{**last, "finish_reason": finish}], memnet=self._extension(value))
                if self.parsed.include_usage:
                    yield self._sse(kind, [], usage=self._usage(value))
        yield "data: [DONE]\n\n"

    def _sse(self, kind: str, choices: list[dict[str, Any]], **more: Any) -> str:
        return "data: " + json.dumps({"id": self.id, "object": kind, "created": self.created,
                                      "model": self.parsed.model, "choices": choices, **more}) + "\n\n"

    def _usage(self, done: Done) -> dict[str, Any]:
        prompt = self.ticket.prompt_tokens
        completion, reused = len(done.generation.new_ids), done.generation.reused
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": reused}}

    def _extension(self, done: Done) -> dict[str, Any]:
        g = done.generation
        return {"reused_tokens": g.reused, "prompt_tokens": g.prompt_tokens, "source": g.source,
                "cube": cid.to_text(g.cube_id) if g.cube_id else None, "dtype": g.dtype, "peer": g.peer,
                "ttft_ms": round(g.ttft * 1000, 1), "queued_ms": round(done.queued * 1000, 1),
                "decision": g.decision or None, "memories": [cid.to_text(c) for c in done.memories]}
