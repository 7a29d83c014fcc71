"""What the population asks for: shared prefixes under a Zipf law, private ones, plaintext and
LoRA cubes, a flash crowd, pinned cubes. Prefix keys come from memnet's own chain
(cube/prefix.py) over real token ids, so the keys, their DHT positions and the blocks a lookup
can match are the ones the daemon would use.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from array import array
from dataclasses import dataclass, field
from itertools import accumulate

from memnet.cube import prefix as chain
from memnet.cube.cid import PREFIX as CID_PREFIX
from memnet.net import dht_keys
from simulations.swarm.overlay import position
from simulations.swarm.params import Scenario

VOCAB = 49_152
MODEL_FP = hashlib.sha256(b"memnet-sim/model").digest()
TOKENIZER_FP = hashlib.sha256(b"memnet-sim/tokenizer").digest()
SALT = chain.salt(MODEL_FP, TOKENIZER_FP, None, "int8")


def fake_cid(*parts: object) -> bytes:
    """A cube id shaped like memnet's (CIDv1, raw, sha2-256) for a simulated cube."""
    return CID_PREFIX + hashlib.sha256(repr(parts).encode()).digest()


@dataclass
class Cube:
    cube_id: bytes
    kind: str                     # activation | plaintext | parameter
    size: int
    author: int
    tokens: int = 0
    prefix: int | None = None     # which prefix an activation cube caches
    prefix_keys: list[bytes] = field(default_factory=list)
    dht: list[int] = field(default_factory=list)   # positions of every key it is announced under

    @property
    def own_key(self) -> int:
        return self.dht[0]


class Prefixes:
    """The shared prefixes (ids 0 … prefixes-1, Zipf-popular), each node's private ones
    (ids from `prefixes` on, made as needed), and the flash crowd's (id -1)."""

    def __init__(self, scenario: Scenario, rng: random.Random):
        w = scenario.workload
        self.w, self.rng, self.block = w, rng, scenario.policy.block_size
        self.seed = scenario.seed
        self.cum = list(accumulate(1 / (r + 1) ** w.zipf_s for r in range(w.prefixes)))
        self.tokens: dict[int, int] = {}
        self._keys: dict[int, list[bytes]] = {}
        self.positions: dict[bytes, int] = {}

    def draw(self, node: int) -> int:
        if self.rng.random() < self.w.private_share:   # one of the node's 4 private documents
            return self.w.prefixes + 4 * node + self.rng.randrange(4)
        x = self.rng.random() * self.cum[-1]
        return bisect.bisect_right(self.cum, x)

    def length(self, p: int) -> int:
        n = self.tokens.get(p)
        if n is None:
            if p == -1:
                n = self.w.flash_tokens
            else:
                lo, hi = self.w.prefix_tokens
                n = int(math.exp(random.Random(self.seed * 7919 + p).uniform(math.log(lo), math.log(hi))))
            self.tokens[p] = n
        return n

    def cube_keys(self, p: int) -> list[bytes]:
        """memnet's prefix-chain keys of the prefix's own token ids (what its cube lists)."""
        keys = self._keys.get(p)
        if keys is None:
            data = random.Random(self.seed * 104_729 + p).randbytes(4 * self.length(p))
            ids = [t % VOCAB for t in array("I", data)]
            keys = self._keys[p] = chain.prefix_keys(ids, SALT, self.block)
        return keys

    def prompt_keys(self, p: int, ask: int) -> list[bytes]:
        """The keys of prefix + a question: the prefix's full blocks, then blocks no one else
        has (the question's tokens are in them)."""
        n = self.length(p)
        full = self.cube_keys(p)[: n // self.block]
        total = n + self.w.suffix_tokens
        rest = -(-total // self.block) - len(full)
        return full + [hashlib.sha256(b"ask/%d/%d" % (ask, i)).digest() for i in range(rest)]

    def position(self, key: bytes) -> int:
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = position(dht_keys.prefix_key(key))
        return pos


def activation_cube(prefixes: Prefixes, p: int, author: int, made: float, kv_bytes: int) -> Cube:
    keys = prefixes.cube_keys(p)
    cube_id = fake_cid("kv", p, author, made)
    n = prefixes.length(p)
    dht = [position(dht_keys.cube_key(cube_id))] + [prefixes.position(k) for k in keys]
    return Cube(cube_id, "activation", n * kv_bytes, author, n, p, keys, dht)


def library(scenario: Scenario, rng: random.Random) -> list[Cube]:
    """The plaintext and LoRA cubes published before the run, each by a random author."""
    w = scenario.workload
    lora_share = w.lora_share / max(1e-9, w.lora_share + w.plaintext_share)
    out = []
    for i in range(w.cubes):
        kind = "parameter" if rng.random() < lora_share else "plaintext"
        size = scenario.spec.lora_bytes if kind == "parameter" else w.plaintext_bytes
        cube_id = fake_cid(kind, i)
        out.append(Cube(cube_id, kind, size, rng.randrange(scenario.nodes),
                        dht=dht_keys_positions(cube_id, kind)))
    return out


def dht_keys_positions(cube_id: bytes, kind: str) -> list[int]:
    return [position(k) for k in dht_keys.announce_keys(cube_id, kind)]
