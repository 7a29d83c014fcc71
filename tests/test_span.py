"""The span protocol, its sessions, DHT records, routing, admission and the layer executor
(memnet/span): pure or torch-only, no network. Real span servers on hivemind: test_distributed.py."""

from __future__ import annotations

import hashlib

import pytest

from memnet.cube import canonical, cid
from memnet.errors import CIDError, FormatError, LimitError, PeerError
from memnet.net.frames import frame, varint
from memnet.span import protocol as p
from memnet.span import records, routing
from memnet.span.admission import CacheBudget
from memnet.span.session import ClientSession, Limits, ServerSession, SpanError

MODEL = hashlib.sha256(b"model").digest()
CUBE = cid.cid_of(b"a kv cube")
H = 8


def step_bytes(tokens: int) -> bytes:
    return bytes(tokens * H * 4)


SAMPLES = [
    p.Open(0, 15, 2048, MODEL), p.Open(15, 30, 64, MODEL, p.Seed(CUBE, 17)),
    p.Opened(0, "none", 0), p.Opened(2048, "fetched", 12_345),
    p.Step(0, 0, 3, step_bytes(3)), p.Output(7, step_bytes(1)), p.Close(),
    p.Error("admission", "no room \u00e9"),
]


# -- messages -------------------------------------------------------------------------------------

@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.t)
def test_messages_round_trip_canonically(message):
    data = p.encode(message)
    decoder = p.Decoder()
    decoder.feed(data)
    assert decoder.next() == message and decoder.next() is None
    assert data == frame(canonical.encode(message.to_map()))


def msg(t: str, **fields) -> dict:
    return {"t": t, **fields}


@pytest.mark.parametrize("value, exc", [
    ([1], FormatError), (msg("hello"), FormatError), ({"x": 1}, FormatError),
    (msg("open", start=0, end=1, max_length=1), FormatError),                       # missing model
    (msg("open", start=0, end=1, max_length=1, model=MODEL, x=1), FormatError),     # unknown field
    (msg("open", start=3, end=3, max_length=1, model=MODEL), FormatError),          # empty span
    (msg("open", start=0, end=1, max_length=1, model=MODEL[:31]), FormatError),     # short fingerprint
    (msg("open", start=0, end=2000, max_length=1, model=MODEL), LimitError),        # too many layers
    (msg("open", start=0, end=1, max_length=1 << 21, model=MODEL), LimitError),
    (msg("open", start=0, end=1, max_length=4, model=MODEL, seed={"cube": b"xx", "tokens": 1}), CIDError),
    (msg("open", start=0, end=1, max_length=4, model=MODEL, seed={"cube": CUBE}), FormatError),
    (msg("open", start=0, end=1, max_length=4, model=MODEL, seed={"cube": CUBE, "tokens": 0}), FormatError),
    (msg("step", step=-1, position=0, tokens=1, hidden=b""), FormatError),
    (msg("step", step=0, position=0, tokens=0, hidden=b""), FormatError),
    (msg("step", step=True, position=0, tokens=1, hidden=b""), FormatError),
    (msg("step", step=0, position="0", tokens=1, hidden=b""), FormatError),
    (msg("step", step=0, position=0, tokens=1, hidden="text"), FormatError),
    (msg("opened", position=0, source="somewhere", fetched=0), FormatError),
    (msg("error", code="teapot", message=""), FormatError),
    (msg("error", code="busy", message="x" * 600), LimitError),
])
def test_malformed_and_forged_messages_are_refused(value, exc):
    with pytest.raises(exc):
        p.from_map(value)
    decoder = p.Decoder()
    decoder.feed(frame(canonical.encode(value)))
    with pytest.raises(exc):
        decoder.next()


def test_truncated_and_oversized_frames():
    data = p.encode(p.Step(0, 0, 2, step_bytes(2)))
    decoder = p.Decoder()
    decoder.feed(data[:-1])
    assert decoder.next() is None
    with pytest.raises(FormatError, match="truncated"):
        decoder.eof()
    small = p.Decoder(max_frame=1024)
    small.feed(varint(4096))
    with pytest.raises(LimitError):  # refused at the length, before the body
        small.next()
    with pytest.raises(LimitError):
        p.encode(p.Step(0, 0, 1, bytes(p.MAX_FRAME + 1)))
    noncanonical = frame(b"\x81\xa1t\xa5close" + b"\x00")  # a trailing byte
    decoder = p.Decoder()
    decoder.feed(noncanonical)
    with pytest.raises(FormatError):
        decoder.next()


# -- sessions -------------------------------------------------------------------------------------

LIMITS = Limits(0, 15, MODEL, H, 64)


def feed(session, *messages) -> list:
    session.receive_data(b"".join(p.encode(m) for m in messages))
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


def test_server_session_happy_path_and_rewind():
    s = ServerSession(LIMITS)
    assert feed(s, p.Open(0, 15, 64, MODEL)) == [p.Open(0, 15, 64, MODEL)]
    [step] = feed(s, p.Step(0, 0, 5, step_bytes(5)))
    s.stepped(step)
    assert s.length == 5
    [step] = feed(s, p.Step(1, 5, 1, step_bytes(1)))
    s.stepped(step)
    [step] = feed(s, p.Step(2, 3, 2, step_bytes(2)))  # rewind to position 3 (a failover, a rejected draft)
    s.stepped(step)
    assert s.length == 5
    assert feed(s, p.Close()) == [p.Close()] and s.closed


@pytest.mark.parametrize("opening, steps, code", [
    (p.Step(0, 0, 1, step_bytes(1)), [], "bad_request"),                  # a step before open
    (p.Open(0, 15, 64, hashlib.sha256(b"other").digest()), [], "wrong_model"),
    (p.Open(10, 20, 64, MODEL), [], "not_serving"),
    (p.Open(0, 15, 65, MODEL), [], "too_large"),
    (p.Open(0, 15, 64, MODEL, p.Seed(CUBE, 64)), [], "bad_request"),   # the seed leaves no room
    (p.Open(0, 15, 64, MODEL), [p.Open(0, 15, 64, MODEL)], "bad_request"),  # open twice
    (p.Open(0, 15, 64, MODEL), [p.Step(0, 1, 1, step_bytes(1))], "bad_request"),   # past the cache's end
    (p.Open(0, 15, 64, MODEL), [p.Step(0, 0, 65, step_bytes(65))], "too_large"),   # past max_length
    (p.Open(0, 15, 64, MODEL), [p.Step(0, 0, 2, step_bytes(3))], "bad_request"),   # hidden of the wrong size
    (p.Open(0, 15, 64, MODEL), [p.Opened(0, "none", 0)], "bad_request"),          # a server message
])
def test_server_session_refuses_what_breaks_a_rule(opening, steps, code):
    s = ServerSession(LIMITS)
    with pytest.raises(SpanError) as info:
        feed(s, opening, *steps)
    assert info.value.code == code and s.closed


def test_frames_are_capped_by_what_the_session_may_send():
    """Before its open a stream may send an open's worth (a header announcing 60 MiB is refused at
    the header, not buffered: 32 such streams held 1.9 GB before); after it, a step of the
    session's max_length at most."""
    s = ServerSession(LIMITS)
    s.receive_data(varint(60 << 20) + bytes(1 << 16))
    with pytest.raises(SpanError) as info:
        s.next_event()
    assert info.value.code == "too_large" and s.closed
    s = ServerSession(LIMITS)
    feed(s, p.Open(0, 15, 64, MODEL, p.Seed(CUBE, 20, tuple(f"/ip4/10.0.0.{i}/tcp/4001/p2p/{'Q' * 200}"
                                                                 for i in range(p.MAX_HINTS)))))
    [step] = feed(s, p.Step(0, 0, 64, step_bytes(64)))   # the biggest step the session allows
    assert step.tokens == 64
    s.receive_data(varint(len(p.encode(p.Step(1, 0, 64, step_bytes(64)))) + 4096))
    with pytest.raises(SpanError) as info:
        s.next_event()
    assert info.value.code == "too_large"


def test_step_ids_must_increase_so_a_replayed_step_cannot_run_twice():
    s = ServerSession(LIMITS)
    feed(s, p.Open(0, 15, 64, MODEL))
    [step] = feed(s, p.Step(4, 0, 1, step_bytes(1)))
    s.stepped(step)
    with pytest.raises(SpanError, match="not after"):
        feed(s, p.Step(4, 1, 1, step_bytes(1)))


def test_a_seeded_session_starts_at_the_seed():
    s = ServerSession(LIMITS)
    feed(s, p.Open(0, 15, 64, MODEL, p.Seed(CUBE, 20)))
    s.seeded(20)
    [step] = feed(s, p.Step(0, 20, 3, step_bytes(3)))
    assert step.position == 20


def test_client_session_checks_the_order_of_answers():
    c = ClientSession("srv")
    c.open(p.Open(0, 15, 64, MODEL))
    c.receive_data(p.encode(p.Opened(0, "none", 0)))
    assert type(c.next_event()) is p.Opened
    sid, _ = c.step(0, 1, step_bytes(1))
    sid2, _ = c.step(1, 1, step_bytes(1))
    c.receive_data(p.encode(p.Output(sid, step_bytes(1))) + p.encode(p.Output(sid2, step_bytes(1))))
    assert [c.next_event().step, c.next_event().step] == [sid, sid2]
    c.step(2, 1, step_bytes(1))
    c.receive_data(p.encode(p.Output(99, step_bytes(1))))
    with pytest.raises(PeerError, match="answered step 99"):
        c.next_event()
    assert c.broken


def test_client_session_raises_server_errors_with_their_code():
    c = ClientSession("srv")
    c.open(p.Open(0, 15, 64, MODEL, p.Seed(CUBE, 3)))
    c.receive_data(p.encode(p.Error("bad_seed", "forged")))
    with pytest.raises(PeerError) as info:
        c.next_event()
    assert info.value.code == "bad_seed"


# -- records and routing --------------------------------------------------------------------------

def record(peer: str, start: int, end: int, seconds: float = 1e-3, left: int = 10_000, prefixes=()) -> records.SpanRecord:
    return records.SpanRecord(peer, start, end, MODEL, seconds, left, 8192, frozenset(prefixes), ("/ip4/127.0.0.1/tcp/1",))


def test_record_round_trip_and_hostile_values_are_dropped():
    good = record("A", 0, 15, prefixes=[bytes(32)])
    assert records.parse("A", good.to_value(), MODEL, 3) == good
    assert records.parse("A", good.to_value(), MODEL, 15) is None          # not a layer it serves
    assert records.parse("A", good.to_value(), hashlib.sha256(b"x").digest(), 3) is None  # another model
    for change in ({"v": 2}, {"start": -1}, {"end": "30"}, {"layer_seconds": float("nan")}, {"layer_seconds": 0},
                   {"cache_tokens_left": True}, {"prefixes": ["zz" * 32]}, {"prefixes": ["00"] * 65},
                   {"addrs": ["x" * 300]}, {"state": "offline"}, {"dtype": "float16"}):
        assert records.parse("A", {**good.to_value(), **change}, MODEL, 3) is None, change
    assert records.parse("A", "not a map", MODEL, 3) is None
    merged = records.merge({0: {"A": good.to_value(), "B": {"junk": 1}}, 5: {"A": good.to_value()}}, MODEL)
    assert merged == {"A": good}
    assert records.block_key(MODEL, 7) == f"memnet.span.{MODEL.hex()[:16]}.7"


def test_routing_prefers_fast_servers_with_room_and_the_seed():
    need = routing.Need(30, 2048)
    one = [record("A", 0, 15), record("B", 15, 30)]
    assert [(h.peer, h.start, h.end) for h in routing.route(one, need)] == [("A", 0, 15), ("B", 15, 30)]
    full = [record("A", 0, 30, seconds=1e-3), record("C", 0, 30, seconds=1e-2)]
    assert [h.peer for h in routing.route(full, need)] == ["A"]
    no_room = [record("A", 0, 30, left=10), record("C", 0, 30, seconds=1e-2)]
    assert [h.peer for h in routing.route(no_room, need)] == ["C"]
    key = hashlib.sha256(b"prefix").digest()
    seeded = routing.Need(30, 2048, seed_key=key, seed_bytes_per_layer=10e6)
    holders = [record("A", 0, 30), record("H", 0, 30, seconds=2e-3, prefixes=[key])]
    assert [h.peer for h in routing.route(holders, seeded)] == ["H"]   # no fetch beats a little compute
    assert routing.route([record("A", 0, 10), record("B", 20, 30)], need) is None  # a gap
    # banned servers are avoided while others cover the layers, used when nothing else does
    assert [h.peer for h in routing.route(full, need, banned=frozenset({"A"}))] == ["C"]
    assert [h.peer for h in routing.route([record("A", 0, 30)], need, banned=frozenset({"A"}))] == ["A"]
    # a failover routes only the failed hop's layers
    part = routing.route([record("A", 0, 30), record("B", 10, 20)], need, start=10, end=20,
                         banned=frozenset({"A"}))
    assert [(h.peer, h.start, h.end) for h in part] == [("B", 10, 20)]


def test_cache_budget_admission():
    budget = CacheBudget(100, sessions_per_peer=2)
    assert budget.admit("a", 60) is None and budget.left == 40
    assert budget.admit("a", 50).startswith("admission")
    assert budget.admit("a", 40) is None
    assert budget.admit("a", 1).startswith("busy")
    budget.release("a", 60)
    assert budget.admit("b", 60) is None and budget.left == 0
    with pytest.raises(ValueError):
        CacheBudget(0)


def test_idle_leases_give_way_to_a_newcomer():
    """A session that never stepped yields after the open grace (2 s), one that stepped after 10 s
    idle; a step in progress is use; the newcomer learns whom to end and from when."""
    budget = CacheBudget(110, yield_after=10.0, open_grace=2.0)
    assert budget.admit("hog", 50, key="h", now=0.0) is None
    budget.stepped("h", now=0.0, step=False)                           # opened, never stepped
    assert budget.admit("user", 40, key="u", now=1.0) is None
    budget.stepped("u", now=1.0)                                       # stepped at 1
    assert budget.admit("worker", 10, key="w", now=5.0) is None
    budget.stepping("w")                                               # a long step in progress
    assert budget.to_yield(5, now=100.0) == ([], 0.0)                  # it fits: nobody yields
    assert budget.admit("new", 30, key="n", now=1.5).startswith("admission")
    assert budget.to_yield(30, now=1.5) == (["h"], 2.0)               # the silent hog, from t = 2
    assert budget.to_yield(60, now=1.5) == (["h"], 2.0)
    assert budget.to_yield(100, now=1.5) == (["h", "u"], 11.0)        # the user only after 10 s idle
    assert budget.to_yield(110, now=1.5) == ([], 0.0)                  # the busy worker never
    budget.stepped("w", now=20.0)
    assert budget.to_yield(110, now=20.0) == (["h", "u", "w"], 30.0)
    assert budget.take_over(["h"], "new", 30, key="n", now=21.0) is None and budget.left == 30
    budget.release("hog", 50, key="h")                                 # the ended session's own release: a no-op
    assert budget.left == 30 and budget.admit("hog", 50, key="h2", now=21.0).startswith("admission")
    budget.stepped("gone")                                             # a lease already ended: ignored
    with pytest.raises(ValueError):
        CacheBudget(10, yield_after=1.0, open_grace=2.0)


# -- the executor: spans reproduce the whole model -------------------------------------------------

@pytest.fixture(scope="module")
def four_layers(tmp_path_factory):
    from memnet import home
    from memnet.model import loader
    from tests.model_factory import tiny_model_folder

    root = tmp_path_factory.mktemp("span")
    folder = tiny_model_folder(root / "tiny4", layers=4)
    import os
    os.environ["MEMNET_MODELS"] = str(root / "models")
    node = home.init(root / "home")
    model, _ = node.models.pin(str(folder))
    return node, loader.load(model)


def chain_logits(loaded, spans, ids, caches, position=0):
    from memnet.span.executor import embed, head

    hidden = embed(loaded, ids)
    for span, cache in zip(spans, caches):
        hidden = span.forward(cache, hidden, position)
    return head(loaded, hidden)


def test_spans_reproduce_the_full_model_and_decode_on(four_layers):
    from memnet.model.runtime import torch
    from memnet.span.executor import SpanExecutor

    node, loaded = four_layers
    spans = [SpanExecutor(loaded, 0, 1), SpanExecutor(loaded, 1, 4)]
    caches = [s.new_cache() for s in spans]
    ids = loaded.encode("the span servers hold a few layers each and pass the hidden state on")
    got = chain_logits(loaded, spans, ids, caches)
    with torch.inference_mode():
        full = loaded.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
    assert float((full - got).abs().max()) < 1e-4
    nxt = int(got.argmax())
    step = chain_logits(loaded, spans, [nxt], caches, len(ids))
    with torch.inference_mode():
        full2 = loaded.model(input_ids=torch.tensor([ids + [nxt]]), use_cache=False).logits[0, -1]
    assert float((full2 - step).abs().max()) < 1e-4
    # a rewind: the same step again gives the same answer
    again = chain_logits(loaded, spans, [nxt], caches, len(ids))
    assert float((again - step).abs().max()) < 1e-5
    with pytest.raises(Exception):
        SpanExecutor(loaded, 3, 9)


def test_spans_seeded_from_their_share_of_a_cube(four_layers):
    """Each span fills its layers from only the chunks of the cube that cover them (a sparse
    payload): the suffix then gives the full model's logits."""
    from memnet.bridge import seeding
    from memnet.local import Publisher
    from memnet.cube import manifest as manifest_mod
    from memnet.model import generate, kv
    from memnet.model.runtime import torch
    from memnet.model.segments import Segments
    from memnet.span.executor import SpanExecutor

    node, loaded = four_layers
    ids = loaded.encode("a shared prefix that a peer already computed, so nobody computes it again " * 3)
    prefix, suffix = ids[:-5], ids[-5:]
    small_chunks = Publisher(node.store, node.key, 1024)  # so each span needs only some of them
    cube, _ = generate.build(small_chunks, node.perf, loaded, prefix, "float32")
    m = manifest_mod.decode(cube.manifest_bytes, cube.cube_id)
    payload = node.store.read_payload(cube.cube_id)
    spans = [SpanExecutor(loaded, 0, 2), SpanExecutor(loaded, 2, 4)]
    caches = []
    for span in spans:
        header = kv.payloads.validate_activation(payload, m.meta)
        wanted = {0}
        for name in seeding.span_tensors(m.meta, span.start, span.end):
            info = header.tensors[name]
            wanted.update(seeding.chunk_range(m, header.data_start + info.start, header.data_start + info.end))
        parts = [(i * m.chunk_size, payload[i * m.chunk_size:(i + 1) * m.chunk_size]) for i in sorted(wanted)]
        cache = span.new_cache()
        span.seed(cache, Segments.at(parts, m.size), m.meta, len(prefix))
        caches.append(cache)
        assert len(wanted) < len(m.chunks)  # a share of the cube, not all of it
    got = chain_logits(loaded, spans, suffix, caches, len(prefix))
    with torch.inference_mode():
        full = loaded.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
    assert float((full - got).abs().max()) < 1e-4
