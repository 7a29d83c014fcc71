"""Every knob of a swarm simulation, its default, and where the default comes from.

memnet's own defaults are imported, not restated (the reprovide interval, provide_fetched, the
prefix neighbours, the record lifetime, the KV block size), so changing a default in memnet
changes the simulation. py-libp2p's Kademlia constants are restated from its source (0.8.1,
libp2p/kad_dht/common.py), since memnet does not set them. Measured figures are cited in
docs/simulation.md; the ones marked "estimate" are ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

from memnet.config import Config
from memnet.config.sections import PROVIDER_RECORD_EXPIRY
from memnet.model.kv import BLOCK_SIZE
from memnet.net.prefix_plan import PROVIDERS_ASKED

HOUR = 3600.0
_DAEMON = Config().daemon
_ASK = Config().ask


@dataclass(frozen=True)
class Kademlia:
    k: int = 20                    # bucket size and replication (py-libp2p BUCKET_SIZE)
    alpha: int = 10                # queries per round (py-libp2p ALPHA; classic Kademlia uses 3)
    table_capacity: int = 3500     # py-libp2p splits any full bucket up to 256: ~256 x 14 peers
    max_rounds: int = 20           # py-libp2p MAX_PEER_LOOKUP_ROUNDS
    lookup_budget: float = 30.0    # s: py-libp2p checks it at the start of each round
    query_timeout: float = float(_DAEMON.dht_query_timeout)  # s: any DHT request, dial included (py-libp2p: 10)
    refused_cost: float = 0.7      # s: a dial to a refused port (3 retries with backoff, loopback)
    dead_refuse: bool = False      # an offline peer refuses dials (loopback, daemon killed) or hangs
    dead_hung: bool = False        # offline peers hang on a live connection (SIGSTOP): never forgotten
    rpc_round_trips: int = 3       # stream open: 2 for multistream-select, 1 for request/answer
    dial_round_trips: int = 4      # TCP 1, Noise 1.5, muxer negotiation ~1.5
    rpc_cpu: float = 0.002         # s per RPC: ~20 Ed25519 record checks + protobuf (estimate)
    provider_rpc_cpu: float | None = None  # s per GET_PROVIDERS answer (None: rpc_cpu; calibrated on loopback)
    connections: int = 200         # py-libp2p's auto-connector keeps about this many
    record_ttl: float = float(PROVIDER_RECORD_EXPIRY)
    providers_per_key: int = 20    # a node keeps this many providers per key (memnet evicts the stalest)
    add_provider_limit: int = 10   # ADD_PROVIDER accepted per sender per 10 s window (py-libp2p)
    stale_after: float = 3600.0    # s: py-libp2p pings a contact idle this long (at most 5 per 5 min)


@dataclass(frozen=True)
class Churn:
    # Weibull session lengths fitted to IPFS DHT servers: 50 % leave within 2 h, 80 % within 8 h
    # (ProbeLab RFM 2, 2022) -> shape 0.61, scale 3.65 h; Stutzbach & Rejaie (IMC 2006) fit
    # shapes 0.34-0.59 to BitTorrent sessions.
    session_shape: float = 0.61
    session_scale: float = 3.65 * HOUR
    # Log-normal downtimes (power-law-like tails, Stutzbach & Rejaie's TR-2005-003); the median is
    # set from offline_share so that the mean share of nodes offline is what the scenario asks.
    downtime_sigma: float = 1.2
    offline_share: float = 0.5     # mean share of (churning) nodes offline
    always_on: float = 0.05        # never leave: servers, pinning services (estimate)

    def mean_session(self) -> float:
        return self.session_scale * math.gamma(1 + 1 / self.session_shape)

    def downtime_median(self) -> float:
        """The log-normal median that gives offline_share: mean down = mean up * f / (1 - f)."""
        f = min(max(self.offline_share, 1e-6), 0.95)
        mean_down = self.mean_session() * f / (1 - f)
        return mean_down / math.exp(self.downtime_sigma ** 2 / 2)


@dataclass(frozen=True)
class Region:
    name: str
    share: float


REGIONS = (Region("na", 0.40), Region("eu", 0.35), Region("as", 0.25))
# One-way latencies are half these round trips: AWS inter-region pings (2017) between us-east-1,
# eu-west-1/eu-central-1 and ap-northeast-1, plus 10 ms of residential access at each end.
RTT_MS = {("na", "na"): 40, ("eu", "eu"): 30, ("as", "as"): 50,
          ("na", "eu"): 105, ("na", "as"): 165, ("eu", "as"): 240}


@dataclass(frozen=True)
class Link:
    name: str
    share: float
    down_mbps: float
    up_mbps: float


# Residential access (Ofcom UK median 2023: 69/18 Mbit/s; Ookla US median 2023: 198/23; Ookla
# global fixed 2024: 94/48): asymmetric, upload the scarce side.
LINKS = (Link("dsl", 0.30, 50, 10), Link("cable", 0.45, 200, 20), Link("fibre", 0.25, 500, 250))


@dataclass(frozen=True)
class Machine:
    name: str
    share: float
    prefill_tps: float   # prefill tokens per second
    decode_tps: float


@dataclass(frozen=True)
class Model:
    name: str
    kv_bytes_per_token: int       # int8 KV cube payload per token
    lora_bytes: int
    machines: tuple[Machine, ...]


MODELS = {
    # An 8B Llama-class model (llama.cpp Q4_K_M figures: i5-1135G7 25.5 tok/s prefill, Apple M1
    # 94, M1 Max 408, RTX 3070 2402, RTX 4090 7139). KV: 32 layers x 8 KV heads x 128 x 2 (K, V)
    # = 65 536 int8 values per token, + per-token scales in memnet's int8 layout (x1.064).
    "llama-8b": Model("llama-8b", 69_700, 40 * 2**20, (
        Machine("laptop-cpu", 0.35, 25.5, 6.9), Machine("apple-m1", 0.25, 94, 10.2),
        Machine("apple-m1-max", 0.15, 408, 35.7), Machine("rtx-3070", 0.15, 2402, 72.8),
        Machine("rtx-4090", 0.10, 7139, 130.6))),
    # memnet's pinned SmolLM2-135M-Instruct: int8 12 258 B/token (README); 2048 tokens prefill in
    # 2.35 s and 4.7 s on two of our CPUs; the GPU rate is an estimate.
    "smollm2-135m": Model("smollm2-135m", 12_258, 2 * 2**20, (
        Machine("fast-cpu", 0.45, 870, 60), Machine("slow-cpu", 0.45, 435, 30),
        Machine("gpu", 0.10, 40_000, 400))),
}


@dataclass(frozen=True)
class Workload:
    asks_per_hour: float = 2.0      # per online node
    prefixes: int = 5000            # distinct shared prefixes: system prompts, documents, memory sets
    zipf_s: float = 1.0
    prefix_tokens: tuple[int, int] = (512, 4096)   # log-uniform per prefix
    suffix_tokens: int = 64         # the question
    private_share: float = 0.2      # asks whose prefix nobody else has (a private document)
    plaintext_share: float = 0.1    # asks that fetch a plaintext cube by id instead
    lora_share: float = 0.05        # asks that fetch a LoRA cube by id instead
    cubes: int = 2000               # plaintext + LoRA cubes in the commons (Zipf over them too)
    plaintext_bytes: int = 64 * 1024
    pinned: int = 200               # cubes pinned by their authors (and pinners - 1 others)
    pinners: int = 1
    flash_at: float | None = 12 * HOUR   # a new cube everyone wants, published at this time
    flash_share: float = 0.05       # share of nodes that ask for it ...
    flash_window: float = 600.0     # ... within this many seconds
    flash_tokens: int = 2048


@dataclass(frozen=True)
class Policy:
    """memnet's decisions and defaults the simulation exercises (a change here is a change to try
    in memnet, then confirm on the real swarm)."""

    reprovide_interval: float = float(_DAEMON.reprovide_interval)
    provide_fetched: bool = _DAEMON.provide_fetched
    prefix_neighbours: int = _DAEMON.prefix_neighbours
    providers_asked: int = PROVIDERS_ASKED
    promote_after: int = _ASK.promote_after
    min_promote_tokens: int = _ASK.min_promote_tokens
    block_size: int = BLOCK_SIZE
    store_budget: int = 20 * 2**30  # bytes of cubes a node keeps (estimate: a share of a laptop disk)
    eviction: str = "lru"
    find_grace: float | None = _DAEMON.find_grace   # None: a find waits for all k GET_PROVIDERS answers
    skip_slow_lookups: bool = True  # model/perf.worth_asking: no swarm lookup when prefill is faster
    fetch_deadline: bool = True     # model/perf.fetch_deadline: compute once a fetch runs past the prefill it saves
    # not memnet yet (issue 16): the prefill starts at once, beside the lookup and the fetch, and
    # a cube that arrives first takes over; time to first token is the sooner of the two
    overlap_lookup: bool = False
    fetch_fanout: int = 4           # providers a fetch pulls chunks from at once
    chunk_size: int = 256 * 1024


@dataclass(frozen=True)
class Scenario:
    nodes: int = 10_000
    hours: float = 24.0
    warmup: float = 2 * HOUR        # churn and asks run, nothing is counted
    seed: int = 1
    model: str = "llama-8b"
    nat_share: float = 0.5          # behind NAT: DHT clients, reachable through a relay only
    relay_rtt_ms: float = 40.0      # extra round trip through a relay
    relay_mbps: float = 5.0         # a relay's per-connection cap (circuit relay v2 limits data)
    loopback: bool = False          # every link 0.1 ms, loopback_mbps; refused dials (validation)
    loopback_mbps: float = 1000.0   # what one loopback fetch moves (CPU-bound: Noise, yamux, hashing)
    fetch_cpu: float = 0.02         # s per fetch besides the wire: manifest signature, LMDB writes (estimate)
    kad: Kademlia = field(default_factory=Kademlia)
    churn: Churn = field(default_factory=Churn)
    workload: Workload = field(default_factory=Workload)
    policy: Policy = field(default_factory=Policy)

    @property
    def spec(self) -> Model:
        return MODELS[self.model]

    def with_options(self, **options) -> "Scenario":
        """A copy with options set by name, in this object or its sections (for the CLI)."""
        top = {f.name for f in fields(self)}
        out = self
        for name, value in options.items():
            if name in top:
                out = replace(out, **{name: value})
                continue
            for section in ("kad", "churn", "workload", "policy"):
                part = getattr(out, section)
                if name in {f.name for f in fields(part)}:
                    out = replace(out, **{section: replace(part, **{name: value})})
                    break
            else:
                raise ValueError(f"unknown scenario option {name!r}")
        return out
