"""Every setting of a node, with its default, its check and whether a running daemon applies a
change live: one frozen dataclass per config.json section. Defaults live here and nowhere else;
memnet/config/parse.py turns config.json into these, and the layers import the section they use.

A setting is declared with setting(default, check, live=..., doc=...); a nested section with
section(cls). Sections marked flat=True keep their keys at the top level of config.json (the
memory manager's keys predate sections).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memnet.config import checks as c
from memnet.cube import limits
from memnet.governance.trust import TrustPolicy

PROVIDER_RECORD_EXPIRY = 48 * 3600  # py-libp2p's provider record lifetime
MAX_PREFIX_NEIGHBOURS = 64
PROMOTE_AFTER = 2                   # uses of a memory set before its prefix becomes a KV cube (2: docs/simulation.md §5)
CONFIG_VERSION = 1


def setting(default: Any, check: c.Check, *, live: bool = True, doc: str = "") -> Any:
    return field(default=default, metadata={"check": check, "live": live, "doc": doc})


def section(cls: type, *, flat: bool = False, doc: str = "") -> Any:
    return field(default_factory=cls, metadata={"section": cls, "flat": flat, "doc": doc})


# -- the MIP responder and the fetcher (daemon.limits, daemon.fetch) -----------------------------

@dataclass(frozen=True)
class ServeLimits:
    streams_per_peer: int = setting(16, c.count, doc="MIP streams one peer may hold open")
    requests_per_s: float = setting(200.0, c.rate, doc="requests per second per peer (a batch is one)")
    request_burst: float = setting(400.0, c.rate, doc="requests a peer may save up")
    peer_bytes_per_s: float = setting(0.0, c.rate, doc="upload cap per peer, bytes/s; 0 = none")
    upload_bytes_per_s: float = setting(0.0, c.rate, doc="upload cap for the whole node, bytes/s; 0 = none")
    idle_timeout: float = setting(60.0, c.seconds, doc="a stream with no request for this long is closed")
    frame_timeout: float = setting(10.0, c.seconds, doc="a started frame must arrive within this")
    quota_bytes_per_hour: float = setting(4.0 * 2**30, c.rate,
                                          doc="chunk bytes one peer may take per rolling hour; 0 = none")


@dataclass(frozen=True)
class FetchTuning:
    """1 x 4 x 4 keeps 16 chunks (4 MiB at the default size) in flight per provider. Measured on
    loopback (64 MiB from one provider, CPU-bound), a second stream per provider costs both sides
    CPU (about twice the yamux window updates: fetcher +0.02-0.08 s, provider +0.03-0.09 s) for no
    speed-up; with four rate-capped providers one and two streams tie (the end game's duplicates
    are reset when the cube completes, so a deeper pipeline does not hold up the finish)."""

    streams_per_peer: int = setting(1, c.count, doc="MIP streams per provider")
    chunks_per_request: int = setting(4, c.whole(1, 64), doc="chunks per get_chunks")
    requests_per_stream: int = setting(4, c.count, doc="get_chunks pipelined on one stream")


# -- the daemon ("daemon") ---------------------------------------------------------------------

@dataclass(frozen=True)
class DaemonSettings:
    listen: tuple[str, ...] = setting(("/ip4/0.0.0.0/tcp/4737",), c.listen_addrs, live=False,
                                      doc="multiaddrs to listen on")
    bootstrap: tuple[str, ...] = setting((), c.peer_addrs, live=False, doc="peers to join at start")
    mdns: bool = setting(False, c.flag, live=False, doc="find LAN peers with mDNS")
    reprovide_interval: int = setting(
        # IPFS re-provides every 22 h, but memnet's record holders are home machines that lose
        # their records when they restart: in the swarm simulation, with four holders per cube and
        # 30 % of nodes offline, 22 h found 97.9 % of pinned cubes, 4 h 99.6 %, 1 h 100 %.
        4 * 3600, c.below(PROVIDER_RECORD_EXPIRY, "the 48 h record expiry", c.whole(1, what=" of seconds")),
        doc="seconds between announcements of pinned cubes (records held by churning peers are lost on restart)")
    provide_fetched: bool = setting(True, c.flag, doc="announce fetched cubes")
    revocation_check_interval: int = setting(600, c.whole(1, what=" of seconds"),
                                             doc="seconds between DHT lookups for revocations of held cubes")
    prefix_neighbours: int = setting(8, c.whole(0, MAX_PREFIX_NEIGHBOURS),
                                     doc="connected peers asked for a KV prefix before the DHT (0: DHT only)")
    # py-libp2p waits 10 s on any DHT peer that does not answer, and its lookup rounds wait for
    # their slowest peer: with a residential share of peers off, that is most rounds (the swarm
    # simulation, docs/simulation.md). A dial, stream and answer take under 2.2 s at 240 ms RTT.
    dht_query_timeout: float = setting(3.0, c.number(0.5, 10.0, what=" of seconds"), live=False,
                                       doc="seconds a DHT request may take (py-libp2p: 10)")
    find_grace: float | None = setting(0.5, c.optional(c.seconds),
                                       doc="a find stops this long after the first answer naming a provider "
                                           "(null: wait for all k peers)")
    limits: ServeLimits = section(ServeLimits, doc="per-peer limits of the MIP responder")
    fetch: FetchTuning = section(FetchTuning, doc="how many chunks are in flight per provider")


# -- reachability behind NATs ("nat") -----------------------------------------------------------

@dataclass(frozen=True)
class RelayLimits:
    """What a public node gives the private nodes it relays for (circuit relay v2). A relay carries
    the Noise ciphertext of MIP streams; the defaults let one circuit carry a 64 MiB cube twice."""

    reservations: int = setting(64, c.whole(0, 4096), live=False, doc="private nodes holding a slot here at once")
    circuits: int = setting(8, c.whole(1, 256), live=False, doc="relayed connections per reserved node")
    circuit_bytes: int = setting(256 * 2**20, c.size, live=False,
                                 doc="bytes one relayed connection may carry (both ways) before it is cut")
    circuit_seconds: int = setting(900, c.duration, live=False, doc="seconds a relayed connection may last")
    reservation_ttl: int = setting(3600, c.whole(60, 86400), live=False, doc="seconds a slot lasts before renewal")


@dataclass(frozen=True)
class NatSettings:
    announce: tuple[str, ...] = setting((), c.listen_addrs, live=False,
                                        doc="addresses to advertise besides the confirmed ones (a port forward's)")
    upnp: bool = setting(True, c.flag, live=False, doc="ask the router for a port mapping (UPnP IGD)")
    probe_peers: int = setting(5, c.whole(1, 16), doc="peers asked at once whether they can dial us back")
    confirmations: int = setting(3, c.whole(1, 16), doc="agreeing peers needed to change reachability")
    probe_interval: float = setting(900.0, c.interval, doc="seconds between reachability checks once known")
    private_witnesses: bool = setting(False, c.flag, doc="let peers on private or loopback addresses vote "
                                                         "(a LAN or a test on one machine)")
    serve_probes: bool = setting(True, c.flag, live=False, doc="dial peers back when they ask (AutoNAT server)")
    relay: bool = setting(True, c.flag, live=False, doc="relay for private nodes while this node is public")
    relay_limits: RelayLimits = section(RelayLimits, doc="the relay's limits")
    reservations: int = setting(2, c.whole(0, 8), doc="relays a private node keeps a slot on")
    hole_punch: bool = setting(True, c.flag, live=False, doc="try a direct connection (DCUtR) to peers met through a relay")
    dht_client_when_private: bool = setting(True, c.flag, live=False,
                                            doc="a node others cannot dial asks the DHT but does not serve it")


# -- the memory manager (top-level keys) ---------------------------------------------------------

@dataclass(frozen=True)
class Lifecycle:
    store_budget_bytes: int | None = setting(None, c.optional(c.size),
                                             doc="payload bytes the store may hold; null = unlimited")
    eviction: str = setting("lru", c.choice("lru", "lfu"), doc="which unpinned cubes go first")
    archive_after: int | None = setting(30 * 86400, c.optional(c.duration),
                                        doc="seconds unused before a cube is archived; null = never")
    promote_after: int = setting(PROMOTE_AFTER, c.count, doc="uses of a memory set before it becomes a KV cube")
    upkeep_interval: float = setting(60.0, c.interval, doc="seconds between the daemon's upkeep passes")
    audit_keep: int | None = setting(100_000, c.optional(c.count),
                                     doc="newest audit-log entries an upkeep pass keeps; null = all")


# -- `memnet ask` ("ask") ----------------------------------------------------------------------

@dataclass(frozen=True)
class AskSettings:
    k: int = setting(4, c.count, doc="memories recalled per request")
    min_score: float = setting(0.3, c.number(-1.0, 1.0),
                               doc="cosine below this is noise for MiniLM on short notes")
    max_memory_chars: int = setting(6000, c.count, doc="~1500 tokens: room for the question and answer")
    min_promote_tokens: int = setting(64, c.count, doc="a shorter prefix costs less to recompute than to look up")
    # not an "ask" key: the top-level promote_after, copied in by the parser
    promote_after: int = field(default=PROMOTE_AFTER, metadata={"derived": True})


# -- consolidation ("consolidation"): hot memory sets distilled into LoRA cubes ---------------------

@dataclass(frozen=True)
class ConsolidationSettings:
    """MemOS's last transition: a memory set used often, with stable answers, is distilled into a
    parameter (LoRA) cube that answers without the notes in the prompt, published only when a
    measured gate passes (memnet/scheduler/consolidation.py)."""

    enabled: bool = setting(True, c.flag, doc="let the daemon's upkeep distil hot memory sets in the background")
    after_uses: int = setting(8, c.count, doc="uses of a memory set before it is a candidate")
    stable_fraction: float = setting(1.0, c.number(0.0, 1.0),
                                     doc="share of repeated questions that must have got the same answer")
    cpu_budget_per_day: float = setting(900.0, c.number(0.0),
                                        doc="CPU seconds distillation may use per UTC day (0: none)")
    max_adapters: int = setting(4, c.whole(0, 1024), doc="consolidated adapters in use on this node at most")
    gate_accuracy: float = setting(0.8, c.number(0.0, 1.0),
                                   doc="held-back questions the adapter must answer, of those the notes path answers")
    min_judged: int = setting(3, c.whole(0, 1000), doc="held-back questions the notes path must answer for a verdict")
    fact_recall: float = setting(0.5, c.number(0.0, 1.0),
                                 doc="share of the reference answer's facts an answer must state to count as correct")
    use_accuracy: float = setting(0.8, c.number(0.0, 1.0),
                                  doc="gate accuracy `ask` requires before answering from an adapter alone")
    steps: int = setting(60, c.whole(1, 100_000), doc="training steps (batches of 4 question-answer pairs)")
    rank: int = setting(8, c.whole(1, 256), doc="LoRA rank of consolidated adapters")
    archive_after: int | None = setting(14 * 86400, c.optional(c.duration),
                                        doc="an adapter unused this long is archived (no longer used); null = never")
    retry_after: int = setting(7 * 86400, c.duration, doc="a memory set whose adapter failed the gate waits this long")


# -- the hivemind bridge ("hivemind"): distributed inference -------------------------------------

@dataclass(frozen=True)
class HivemindSettings:
    enabled: bool = setting(False, c.flag, live=False, doc="run the hivemind bridge (distributed inference)")
    listen: tuple[str, ...] = setting(("/ip4/0.0.0.0/tcp/0",), c.hivemind_addrs, live=False,
                                      doc="hivemind multiaddrs the bridge listens on")
    announce: tuple[str, ...] = setting((), c.hivemind_addrs, live=False,
                                        doc="multiaddrs to announce instead (explicit ports; behind NAT)")
    initial_peers: tuple[str, ...] = setting((), c.hivemind_addrs, live=False,
                                             doc="hivemind peers to join (/ip4/.../tcp/N/p2p/PEERID)")
    serve_blocks: str | None = setting(None, c.optional(c.layer_range), live=False,
                                       doc="\"A:B\": serve layers A..B-1 of the pinned model (null: serve none)")
    model: str | None = setting(None, c.optional(c.text(200)), live=False,
                                doc="pinned model to serve and route for (name or fingerprint; null: the default)")
    cache_tokens: int = setting(16384, c.count, live=False, doc="session cache tokens a span server holds at most")
    max_length: int = setting(8192, c.count, live=False, doc="longest session a span server accepts, in tokens")
    announce_interval: float = setting(30.0, c.seconds, live=False,
                                       doc="seconds between span announcements (records live 3x this)")
    step_timeout: float = setting(60.0, c.seconds, live=False,
                                  doc="seconds a span session waits for the next step (client and server)")


@dataclass(frozen=True)
class HttpSettings:
    """The daemon's HTTP face (memnet/daemon/http.py): the OpenAI-compatible API and the dashboard.
    The resident model costs about 3x its weights in RAM (SmolLM2-135M: ~0.6 GB) plus each active
    request's KV cache (46 KB per token in float32)."""

    enabled: bool = setting(False, c.flag, live=False, doc="serve the OpenAI-compatible API and the dashboard")
    listen: str = setting("127.0.0.1:8377", c.host_port, live=False,
                          doc="HOST:PORT; any address but loopback needs the bearer token on every request")
    model: str | None = setting(None, c.optional(c.text(200)), live=False,
                                doc="pinned model the API serves (default: the last pinned)")
    resident: str = setting("auto", c.choice("auto", "on", "off"), live=False,
                            doc="keep the model loaded: on, off (load per burst, unload when idle), "
                                "auto (on when the machine has 4x the weights in available memory)")
    idle_unload: float = setting(60.0, c.seconds, live=False, doc="a non-resident model is unloaded after this idle time")
    max_active: int = setting(4, c.whole(1, 64), live=False, doc="requests generating at once (interleaved by step)")
    max_queue: int = setting(32, c.whole(1, 4096), live=False, doc="requests waiting beyond those; more get HTTP 429")
    prefill_chunk: int = setting(256, c.whole(16, 8192), live=False,
                                 doc="prompt tokens per step: a long prompt lets short requests in between")
    default_max_tokens: int = setting(256, c.count, live=False, doc="new tokens when a request sets no max_tokens")
    cache_prompts: int = setting(128, c.whole(0), live=False,
                                 doc="prompt tokens no cube covered before the prompt's K/V is kept as a KV cube; 0 = never")
    cache_dtype: str = setting("float32", c.choice("float32", "float16", "bfloat16", "int8"), live=False,
                               doc="dtype of those cubes (float32: the next answer is exactly the same)")
    share_prompt_caches: bool = setting(False, c.flag, live=False,
                                        doc="announce those cubes to the swarm (they hold users' prompts)")


# -- the whole file ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    config_version: int = setting(CONFIG_VERSION, c.version(CONFIG_VERSION), live=False,
                                  doc="the format of this file")
    chunk_size: int = setting(limits.DEFAULT_CHUNK_SIZE, c.whole(limits.MIN_CHUNK_SIZE, limits.MAX_CHUNK_SIZE),
                              doc="bytes per chunk of cubes published here")
    models_dir: str | None = setting(None, c.optional(c.text()),
                                     doc="where pinned models live ($MEMNET_MODELS wins; default HOME/models)")
    publish_promoted: bool = setting(True, c.flag, doc="announce KV cubes that `ask` promotes")
    trust: TrustPolicy = setting(TrustPolicy(), c.trust, doc="whose cubes are fetched, pinned, injected")
    lifecycle: Lifecycle = section(Lifecycle, flat=True, doc="lifecycle and eviction")
    ask: AskSettings = section(AskSettings, doc="recall and promotion in `memnet ask`")
    consolidation: ConsolidationSettings = section(ConsolidationSettings,
                                                   doc="hot memory sets distilled into LoRA cubes")
    daemon: DaemonSettings = section(DaemonSettings, doc="the swarm daemon")
    nat: NatSettings = section(NatSettings, doc="reachability behind NATs: probes, UPnP, relays, hole punching")
    hivemind: HivemindSettings = section(HivemindSettings, doc="the hivemind bridge: span servers and distributed generation")
    http: HttpSettings = section(HttpSettings, doc="the OpenAI-compatible API and the dashboard")
