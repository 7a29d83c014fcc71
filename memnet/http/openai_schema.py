"""OpenAI API requests checked and turned into engine jobs, and memnet errors turned into
OpenAI's error object (pure: no I/O, no model).

A request is a JSON object. Fields memnet does not know are ignored (clients send many, with
defaults); fields it knows but does not support are refused when they ask for something other
than the default (n > 1, tools, logprobs), so that no client silently gets less than it asked.
memnet's own options travel in an optional "memnet" object (openai client: extra_body=...):

    {"memnet": {"recall": 4, "lora": "CID:0.5", "swarm": true, "fetch": "auto"}}

A model is named by its pinned name or fingerprint prefix, with LoRA cubes after a plus:
"smollm2", "smollm2+CID", "smollm2+CID:0.5,CID2".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memnet.errors import BusyError, MemnetError, NotFoundError, PolicyError, UsageError
from memnet.model.sampling import Sampling
from memnet.scheduler.engine import Job

MAX_STOPS = 4
MAX_STOP_CHARS = 200
MAX_MESSAGES = 1024
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
FETCH = ("auto", "always", "never")


class ModelNotFound(NotFoundError):
    """The request names a model this server does not serve."""


@dataclass
class Request:
    job: Job
    model: str           # as the client named it (echoed back)
    stream: bool
    stops: list[str]
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage


def model_lora(name: Any, served: list[str]) -> str:
    """The LoRA spec in a model name ("" for none); ModelNotFound when its base is not served
    (served: the names and fingerprint the engine's model answers to)."""
    if not isinstance(name, str) or not name.strip():
        raise UsageError("model: a model name is required (GET /v1/models lists them)")
    base, _, lora = name.partition("+")
    if base not in served:
        raise ModelNotFound(f"model {name[:80]!r} is not served here (GET /v1/models lists them)")
    if "+" in name and not lora.strip():
        raise UsageError("model: nothing after '+' (expected CID[:weight],...)")
    return lora


def chat(body: Any, served: list[str]) -> Request:
    body = _object(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UsageError("messages: a non-empty list of {role, content} is required")
    if len(messages) > MAX_MESSAGES:
        raise UsageError(f"messages: at most {MAX_MESSAGES}")
    return _request(body, served, [_message(m, i) for i, m in enumerate(messages)])


def completion(body: Any, served: list[str]) -> Request:
    body = _object(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise UsageError("prompt: one non-empty string is required (token lists and batches are not supported)")
    if body.get("echo") or body.get("suffix"):
        raise UsageError("echo and suffix are not supported")
    return _request(body, served, prompt)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    return body


def _message(message: Any, index: int) -> dict[str, str]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise UsageError(f"{where}: expected an object with role and content")
    role = ROLES.get(message.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise UsageError(f"{where}.role: one of {', '.join(ROLES)} (tools are not supported)")
    content = message.get("content")
    if isinstance(content, list):  # content parts: text only
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise UsageError(f"{where}.content: only text parts are supported")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise UsageError(f"{where}.content: a string is required")
    return {"role": role, "content": content}


def _request(body: dict[str, Any], served: list[str], prompt: str | list[dict[str, str]]) -> Request:
    _refuse_unsupported(body)
    name = body.get("model")
    lora = model_lora(name, served)
    extra = body.get("memnet")
    extra = {} if extra is None else extra
    if not isinstance(extra, dict):
        raise UsageError("memnet: an object is expected")
    unknown = sorted(set(extra) - {"recall", "lora", "swarm", "fetch"})
    if unknown:
        raise UsageError(f"memnet: unknown field(s) {', '.join(k[:40] for k in unknown)}")
    if "lora" in extra:
        if not isinstance(extra["lora"], str):
            raise UsageError("memnet.lora: a string CID[:weight],... is expected")
        lora = ",".join(filter(None, [lora, extra["lora"]]))
    recall = extra.get("recall", 0)
    recall = 4 if recall is True else 0 if recall is False else recall
    if not _whole(recall) or not 0 <= recall <= 64:
        raise UsageError("memnet.recall: true, false or a number of memories from 0 to 64")
    swarm = extra.get("swarm", True)
    fetch = extra.get("fetch", "auto")
    if not isinstance(swarm, bool) or fetch not in FETCH:
        raise UsageError(f"memnet.swarm must be true or false, memnet.fetch one of {', '.join(FETCH)}")
    stream = body.get("stream", False) or False
    if not isinstance(stream, bool):
        raise UsageError("stream: true or false")
    options = body.get("stream_options")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise UsageError("stream_options: an object is expected")
    job = Job(prompt=prompt, max_tokens=_max_tokens(body), sampling=_sampling(body), lora=lora.strip(),
              swarm=swarm, fetch=fetch, recall=int(recall))
    return Request(job, name, stream, _stops(body.get("stop")), bool(options.get("include_usage")))


def _refuse_unsupported(body: dict[str, Any]) -> None:
    n = body.get("n", 1)
    if n not in (1, None):
        raise UsageError("n: only 1 choice per request is supported")
    for key in ("tools", "functions", "logit_bias"):
        if body.get(key):
            raise UsageError(f"{key} is not supported")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise UsageError("logprobs are not supported")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise UsageError("response_format: only text is supported")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return None
    if not _whole(value) or value < 1:
        raise UsageError("max_tokens: a whole number of at least 1")
    return value


def _number(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{key}: a number is expected")
    return float(value)


def _sampling(body: dict[str, Any]) -> Sampling | None:
    temperature, top_p = _number(body, "temperature", 1.0), _number(body, "top_p", 1.0)
    seed = body.get("seed")
    if seed is not None and (not _whole(seed) or not 0 <= seed < 2**63):
        raise UsageError("seed: a whole number from 0 to 2^63-1")
    sampling = Sampling(temperature, top_p, seed)  # UsageError when out of range
    return None if sampling.greedy else sampling


def _stops(value: Any) -> list[str]:
    stops = [value] if isinstance(value, str) else value if isinstance(value, list) else [] if value is None else None
    if stops is None or len(stops) > MAX_STOPS or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS
                                                          for s in stops):
        raise UsageError(f"stop: a string or a list of up to {MAX_STOPS} non-empty strings")
    return stops


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(HTTP status, OpenAI error object) for an exception."""
    if isinstance(exc, ModelNotFound):
        status, kind, code = 404, "invalid_request_error", "model_not_found"
    elif isinstance(exc, NotFoundError):
        status, kind, code = 404, "invalid_request_error", "not_found"
    elif isinstance(exc, BusyError):
        status, kind, code = 429, "rate_limit_error", "queue_full"
    elif isinstance(exc, PolicyError):
        status, kind, code = 403, "permission_error", "refused"
    elif isinstance(exc, UsageError):
        context = "context" in str(exc)
        status, kind, code = 400, "invalid_request_error", "context_length_exceeded" if context else None
    elif isinstance(exc, MemnetError):
        status, kind, code = 422, "invalid_request_error", type(exc).__name__
    else:
        status, kind, code = 500, "server_error", None
    message = str(exc).splitlines()[0][:500] if isinstance(exc, MemnetError) else "internal error (see the daemon's log)"
    return status, {"error": {"message": message, "type": kind, "param": None, "code": code}}
