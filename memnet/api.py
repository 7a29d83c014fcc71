"""The Python API over a node home: what `memnet generate` and `memnet kv build` do, callable
from a program.

    from memnet import api
    result = api.generate("What is a MemCube?", home="~/.memnet", max_new_tokens=40)
    print(result.text, result.timing_line())

Prompts are text or chat messages ([{"role": ..., "content": ...}]). With a daemon running for
the home (and swarm=True), prefixes the local store lacks are looked up in the swarm.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from memnet import home as home_mod
from memnet import ingest
from memnet.cube import cid
from memnet.cube.build import Cube
from memnet.errors import DaemonError, DaemonTimeout, FetchDeadline, FetchError, UsageError
from memnet.governance import audit
from memnet.model import perf

Prompt = str | list[dict[str, str]]
FETCH_POLICIES = ("auto", "always", "never")


class DaemonSwarm:
    """generate's view of the swarm, through the node's running daemon (control channel)."""

    def __init__(self, client: Any):
        self.client = client
        self.found: dict[bytes, dict] = {}  # from the last lookup: no second DHT query or manifest request

    def find_prefix(self, probes: list[list[bytes]]) -> list[tuple[bytes, bytes]]:
        found = self.client.call("find_prefix", probes=probes)
        self.found = {c["cube"]: c for c in found}
        return [(c["cube"], c["manifest"]) for c in found]

    def get(self, cube_id: bytes, deadline: float | None = None) -> tuple[int, float, str]:
        # the caller waits to use the cube, not to share it: the daemon announces it afterwards
        # auto: the daemon's trust policy decides whether this peer's cube is fetched and pinned.
        # Past the deadline the caller computes instead; the daemon's get runs on and stores it
        known = self.found.get(cube_id, {})
        try:
            give_up = None if deadline is None else (
                lambda elapsed, done, total: not perf.keep_waiting(elapsed, done, total, deadline))
            result = self.client.call("get", give_up=give_up, cube=cube_id, pin=True, wait_announce=False, auto=True,
                                      providers=known.get("providers", []), manifest=known.get("manifest"))
        except DaemonTimeout:
            raise FetchDeadline(f"the fetch of {cid.to_text(cube_id)} was not going to finish sooner than a "
                                f"prefill ({deadline:.1f} s)") from None
        except DaemonError as exc:   # no provider served it, or the daemon went away: compute instead
            raise FetchError(str(exc)) from None
        if result["already"]:
            return 0, 0.0, "local"
        top = max(result["from"].items(), key=lambda item: item[1], default=("?", 0))[0]
        return result["size"], result["seconds"], top


def open_node(home: str | os.PathLike | None = None) -> home_mod.Node:
    return home_mod.open_node(home_mod.resolve(home))


def load(node: home_mod.Node, model: str | None = None, lora: str | None = None):
    """The pinned model (by name or fingerprint prefix; default the last pinned) with the
    adapters of a `CID[:weight],...` spec applied: (LoadedModel, adapter fingerprint or None)."""
    from memnet.model import loader, lora as lora_mod

    loaded = loader.load(node.models.resolve(model))
    specs = lora_mod.parse_specs(lora) if lora else []
    return loaded, lora_mod.activate(node.store, node.gate(), loaded, specs)


def token_ids(loaded: Any, prompt: Prompt, add_generation_prompt: bool) -> list[int]:
    if isinstance(prompt, list):
        return loaded.encode_chat(ingest.chat_messages(prompt, "the chat"), add_generation_prompt)
    return loaded.encode(prompt)


def seed_hints(node: home_mod.Node, peers: DaemonSwarm | None, candidate: Any) -> list[str]:
    """Who holds a seed cube: this node's daemon for a local cube, else the providers its prefix
    lookup found (multiaddrs with /p2p/)."""
    from memnet.daemon import state

    if candidate.local:
        running = state.read(node.home)
        return list(running.addrs[:4]) if running is not None else []
    found = peers.found.get(candidate.cube_id, {}) if peers is not None else {}
    return [f"{a}/p2p/{p['peer_id']}" for p in found.get("providers", []) for a in p["addrs"][:1]]


def swarm_of(home: home_mod.Node) -> DaemonSwarm | None:
    from memnet.daemon.control import ControlClient

    client = ControlClient.for_home(home.home)
    return DaemonSwarm(client) if client is not None else None


def generate(prompt: Prompt, *, home: str | os.PathLike | home_mod.Node | None = None, model: str | None = None,
             lora: str | None = None, max_new_tokens: int = 64,
             kv_dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16", "int8"),
             local: bool = True, swarm: bool = True, fetch: str = "auto", check: bool = False,
             distributed: bool = False):
    """Answer a prompt, reusing the longest cached prefix; returns memnet.model.generate.Generation.
    distributed: run the layers on span servers through the node's hivemind bridge (the cached
    prefix then seeds their caches)."""
    from memnet.model import generate as gen, kv

    if any(d not in kv.DTYPE_NAMES for d in kv_dtypes) or not kv_dtypes:
        raise UsageError(f"KV dtypes must be among {', '.join(kv.DTYPE_NAMES)}")
    if fetch not in FETCH_POLICIES:
        raise UsageError(f"fetch must be one of {', '.join(FETCH_POLICIES)}")
    if max_new_tokens < 1:
        raise UsageError("max_new_tokens must be at least 1")
    node = home if isinstance(home, home_mod.Node) else open_node(home)
    loaded, adapter = load(node, model, lora)
    ids = token_ids(loaded, prompt, add_generation_prompt=True)
    peers = swarm_of(node) if (swarm and local) else None
    options = gen.Options(max_new_tokens=max_new_tokens, dtypes=tuple(kv_dtypes), adapter=adapter,
                          use_local=local, use_swarm=peers is not None, check=check, fetch=fetch)
    if distributed:
        from memnet.model.distributed import generate_distributed
        from memnet.span.local_client import BridgeClient

        chain = BridgeClient.for_home(node.home)
        try:
            result = generate_distributed(node.store, node.gate(), loaded, ids, options, chain, peers,
                                          lambda c: seed_hints(node, peers, c))
        finally:
            chain.close()
    else:
        result = gen.generate(node.store, node.gate(), node.perf, loaded, ids, options, peers)
    result.model_load_seconds = loaded.load_seconds
    audit.record_generation(node.store, ids=ids, result=result, adapters=loaded.adapters.get("specs", ()),
                            prompt_text=prompt if isinstance(prompt, str) else prompt[-1]["content"] if prompt else None)
    return result


class KvBuild(NamedTuple):
    cube: Cube
    n_tokens: int       # tokens the cube holds
    seconds: float      # their prefill
    held_back: int = 0  # trailing tokens of the text left out: they merge with whatever follows


def build_kv(prompt: Prompt, *, home: str | os.PathLike | home_mod.Node | None = None, model: str | None = None,
             lora: str | None = None, dtype: str = "float16", **publish_options: Any) -> KvBuild:
    """Prefill a prefix and publish its K/V as an activation cube. A text whose last tokens the
    tokenizer would merge with what a prompt adds after it (trailing whitespace: "\n" then
    "\n\n" become one "\n\n\n" token) is cut before them, so that every prompt continuing
    the text shares all the cube's tokens."""
    from memnet.model import generate as gen, kv

    node = home if isinstance(home, home_mod.Node) else open_node(home)
    loaded, adapter = load(node, model, lora)
    ids = token_ids(loaded, prompt, add_generation_prompt=False)
    keep = kv.stable_length(loaded, prompt, ids) if isinstance(prompt, str) else len(ids)
    if keep == 0:
        raise UsageError("the text has no token that stays the same whatever follows it")
    cube, seconds = gen.build(node.publisher, node.perf, loaded, ids[:keep], dtype, adapter, **publish_options)
    return KvBuild(cube, keep, seconds, len(ids) - keep)
