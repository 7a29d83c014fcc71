"""FetchPlan (memnet/net/fetch_plan.py): which chunk goes to which peer. Pure logic, so the tests
drive it directly, plus a seeded simulation of several peers that drop out or lack chunks."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from memnet.net.fetch_plan import FetchPlan


def ids(n: int) -> list[bytes]:
    return [b"c%03d" % i for i in range(n)]


def plan_of(n: int, batch: int = 4, size: int = 10) -> tuple[FetchPlan, list[bytes]]:
    chunks = ids(n)
    return FetchPlan(chunks, {c: size + i for i, c in enumerate(chunks)}, batch=batch), chunks


# -- batches --------------------------------------------------------------------------------------

def test_batches_split_work_without_overlap_while_work_is_pending():
    plan, chunks = plan_of(10, batch=3)
    a, b, c = plan.next_batch("A"), plan.next_batch("B"), plan.next_batch("C")
    assert a == chunks[0:3] and b == chunks[3:6] and c == chunks[6:9]
    d = plan.next_batch("A")  # only one chunk is left unrequested: A gets it, alone
    assert d == chunks[9:10]
    assert not set(a) & set(b) and not set(b) & set(c) and not set(a) & set(c)
    assert not plan.complete


def test_total_bytes_and_an_empty_plan():
    plan, chunks = plan_of(5)
    assert plan.total_bytes == sum(10 + i for i in range(5)) and plan.done_bytes == 0
    empty = FetchPlan([], {})
    assert empty.complete and empty.total_bytes == 0
    assert empty.next_batch("A") == []
    assert not empty.stuck({"A"}) and not empty.stuck(set())


def test_end_game_duplicates_in_flight_chunks_only_to_peers_without_them():
    plan, chunks = plan_of(6, batch=4)
    a = plan.next_batch("A")            # c0..c3
    b = plan.next_batch("B")            # c4, c5
    assert b == chunks[4:6]
    # nothing is pending now: A (idle again) duplicates what only B has in flight, never its own
    again = plan.next_batch("A")
    assert again == chunks[4:6]
    assert not set(again) & set(a)
    # C duplicates in-flight chunks it does not have, up to the batch size
    c = plan.next_batch("C")
    assert c == chunks[0:4]
    # a chunk is asked of at most two peers: c0..c3 are at A and C, c4, c5 at B and A
    assert plan.next_batch("B") == []
    assert plan.next_batch("A") == []


def test_end_game_waits_for_the_last_batch_per_peer():
    """Duplicates cost upload: while more than a batch per live peer is in flight, idle peers
    wait rather than duplicate."""
    plan, chunks = plan_of(20, batch=4)
    for peer in "ABCD":
        plan.next_batch(peer)
    plan.next_batch("A")                       # 20 in flight, 0 pending
    assert plan.next_batch("B") == []           # 20 > 4 per peer x 4 peers
    for chunk_id in chunks[:4]:
        plan.received("A", chunk_id)            # 16 in flight = 4 x 4: the end game opens
    assert len(plan.next_batch("B")) == 4


def test_end_game_respects_batch_size_and_skips_done_chunks():
    plan, chunks = plan_of(5, batch=2)
    plan.next_batch("A"), plan.next_batch("A"), plan.next_batch("A")  # A holds all five
    assert plan.received("A", chunks[0]) and plan.received("A", chunks[1])
    assert plan.next_batch("B") == chunks[2:4]
    assert plan.next_batch("B") == chunks[4:5]
    assert plan.next_batch("B") == []


def test_received_counts_a_chunk_once():
    plan, chunks = plan_of(3, batch=3)
    plan.next_batch("A")
    plan.next_batch("B")  # end game: B duplicates all three
    assert plan.received("B", chunks[0]) is True
    assert plan.done_bytes == 10
    assert plan.received("A", chunks[0]) is False   # the slower copy
    assert plan.received("B", chunks[0]) is False   # and a repeat from the same peer
    assert plan.done_bytes == 10 and plan.done == {chunks[0]}
    assert plan.received("A", chunks[1]) and plan.received("A", chunks[2])
    assert plan.complete and plan.done_bytes == plan.total_bytes == 10 + 11 + 12
    assert plan.received("B", chunks[2]) is False and plan.done_bytes == 33


def test_a_received_chunk_is_never_handed_out_again():
    plan, chunks = plan_of(2, batch=1)
    assert plan.next_batch("A") == [chunks[0]]
    assert plan.received("A", chunks[0])
    plan.failed("A", [chunks[0]])           # a late failure report changes nothing
    plan.lacks("B", chunks[0])
    plan.drop("A", "gone")
    assert plan.next_batch("B") == [chunks[1]]
    assert plan.next_batch("C") == [chunks[1]]  # end game: only c1 remains
    assert plan.received("C", chunks[1]) and plan.complete


def test_drop_returns_in_flight_chunks_to_pending_first():
    plan, chunks = plan_of(8, batch=3)
    a = plan.next_batch("A")          # c0..c2
    assert plan.next_batch("B") == chunks[3:6]
    plan.drop("A", "vanished")
    assert plan.dropped == {"A": "vanished"}
    # A's chunks come back ahead of the never-requested c6, c7
    retry = plan.next_batch("B")
    assert sorted(retry) == sorted(a)
    assert plan.next_batch("B") == chunks[6:8]
    assert plan.next_batch("A") == []  # a dropped peer gets nothing
    plan.drop("A", "second reason")
    assert plan.dropped["A"] == "vanished"  # the first reason is kept


def test_drop_keeps_chunks_in_flight_at_other_peers():
    plan, chunks = plan_of(2, batch=2)
    plan.next_batch("A")
    plan.next_batch("B")  # duplicates both
    plan.drop("A", "slow")
    # the chunks are still in flight at B, so they are not pending: C gets them as end game only
    assert plan.next_batch("C") == chunks
    assert plan.next_batch("B") == []


def test_failed_puts_chunks_back_for_anyone():
    plan, chunks = plan_of(4, batch=2)
    plan.next_batch("A")
    plan.next_batch("B")
    plan.failed("A", chunks[0:2])
    assert sorted(plan.next_batch("C")) == chunks[0:2]
    assert "A" not in plan.dropped


def test_lacks_never_reoffers_that_chunk_to_that_peer():
    plan, chunks = plan_of(4, batch=4)
    assert plan.next_batch("A") == chunks
    plan.lacks("A", chunks[1])
    plan.lacks("A", chunks[3])
    assert plan.next_batch("A") == []  # c1, c3 pending again, but not for A
    assert sorted(plan.next_batch("B")) == [chunks[1], chunks[3]]
    # end game does not offer them to A either
    assert plan.next_batch("A") == []
    plan.failed("B", [chunks[1], chunks[3]])
    assert plan.next_batch("A") == []
    # lacking a chunk that was never requested from that peer also counts
    plan2, chunks2 = plan_of(3, batch=3)
    plan2.lacks("A", chunks2[0])
    assert plan2.next_batch("A") == chunks2[1:3]


def test_stuck_when_all_peers_dropped():
    plan, chunks = plan_of(3)
    assert not plan.stuck({"A", "B"})
    plan.next_batch("A")
    plan.drop("A", "x")
    assert not plan.stuck({"A", "B"})
    plan.drop("B", "y")
    assert plan.stuck({"A", "B"})
    assert plan.stuck(set())  # no peers at all, work left


def test_stuck_when_every_remaining_chunk_is_lacked_by_every_live_peer():
    plan, chunks = plan_of(3, batch=3)
    plan.next_batch("A")
    for c in chunks[:2]:
        plan.lacks("A", c)
    assert not plan.stuck({"A", "B"})   # B has not said it lacks anything
    plan.lacks("B", chunks[0])
    plan.lacks("B", chunks[1])
    assert not plan.stuck({"A", "B"})   # c2 is still in flight at A
    assert plan.received("A", chunks[2])
    assert plan.stuck({"A", "B"})       # c0, c1 remain and neither live peer holds them
    assert not plan.stuck({"A", "B", "C"})  # a fresh peer might
    plan.drop("C", "gone")
    assert plan.stuck({"A", "B", "C"})


def test_not_stuck_when_peers_lack_different_chunks():
    plan, chunks = plan_of(2, batch=2)
    plan.lacks("A", chunks[0])
    plan.lacks("B", chunks[1])
    assert not plan.stuck({"A", "B"})
    assert plan.next_batch("A") == [chunks[1]]
    assert plan.next_batch("B") == [chunks[0]]


def test_complete_only_when_everything_received_and_never_stuck_then():
    plan, chunks = plan_of(4, batch=4)
    plan.next_batch("A")
    for c in chunks[:3]:
        assert plan.received("A", c)
        assert not plan.complete
    assert plan.received("A", chunks[3])
    assert plan.complete and plan.done == set(chunks)
    plan.drop("A", "done anyway")
    assert not plan.stuck({"A"})
    assert plan.next_batch("B") == []


# -- simulation -----------------------------------------------------------------------------------

def simulate(seed: int) -> None:
    """Peers pull batches and answer chunk by chunk, in random order. Peer "full" holds every chunk
    and never drops; the others hold random subsets, drop at random and sometimes fail requests."""
    rnd = random.Random(seed)
    chunks = ids(rnd.randint(1, 40))
    sizes = {c: rnd.randint(1, 1000) for c in chunks}
    plan = FetchPlan(chunks, sizes, batch=rnd.randint(1, 6))
    names = ["full"] + [f"p{i}" for i in range(rnd.randint(0, 4))]
    holds = {p: set(chunks) if p == "full" else {c for c in chunks if rnd.random() < 0.6} for p in names}
    peers = set(names)
    requests: list[tuple[str, list[bytes]]] = []  # (peer, chunks still to answer)
    new: Counter[bytes] = Counter()
    lacked: dict[str, set[bytes]] = {p: set() for p in names}

    for _ in range(20_000):
        if plan.complete:
            break
        assert not plan.stuck(peers), "a live peer holds every chunk, yet the plan says stuck"
        live = [p for p in names if p not in plan.dropped]
        action = rnd.random()
        if action < 0.35 or not requests:
            peer = rnd.choice(live)
            busy = {c for p, cs in requests if p == peer for c in cs}
            pending_before = [c for c in chunks if c not in plan.done and c not in lacked[peer]
                              and not any(c in cs for _, cs in requests)]
            batch = plan.next_batch(peer)
            assert len(batch) <= plan.batch and len(set(batch)) == len(batch)
            assert not set(batch) & plan.done, "a received chunk was handed out again"
            assert not set(batch) & lacked[peer], "a chunk was offered to a peer that lacks it"
            assert not set(batch) & busy, "a chunk was offered twice to the same peer"
            if pending_before:
                # work is pending: no duplicates of chunks in flight elsewhere
                in_flight = {c for _, cs in requests for c in cs}
                assert not set(batch) & in_flight
            if batch:
                requests.append((peer, list(batch)))
        elif action < 0.40 and len(live) > 1:
            victim = rnd.choice([p for p in live if p != "full"])
            plan.drop(victim, "random")
            requests = [(p, cs) for p, cs in requests if p != victim]
        else:
            index = rnd.randrange(len(requests))
            peer, todo = requests[index]
            if rnd.random() < 0.05:  # the whole request fails (stream reset)
                plan.failed(peer, todo)
                requests.pop(index)
                continue
            chunk = todo.pop(0)
            if not todo:
                requests.pop(index)
            if chunk in holds[peer]:
                if plan.received(peer, chunk):
                    new[chunk] += 1
            else:
                plan.lacks(peer, chunk)
                lacked[peer].add(chunk)
    assert plan.complete, f"seed {seed}: not complete"
    assert plan.done == set(chunks)
    assert all(new[c] == 1 for c in chunks) and sum(new.values()) == len(chunks)
    assert plan.done_bytes == plan.total_bytes == sum(sizes.values())
    assert not plan.stuck(peers)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_simulation_completes_with_each_chunk_new_exactly_once(seed):
    simulate(seed)


def test_simulation_fixed_seeds():
    for seed in range(50):
        simulate(seed)


def test_stuck_in_simulation_when_no_live_peer_holds_a_chunk():
    rnd = random.Random(7)
    chunks = ids(12)
    plan = FetchPlan(chunks, dict.fromkeys(chunks, 5), batch=3)
    missing = chunks[5]
    holds = {p: {c for c in chunks if c != missing} for p in ("A", "B")}
    for _ in range(1000):
        if plan.stuck({"A", "B"}):
            break
        peer = rnd.choice("AB")
        for c in plan.next_batch(peer):
            if c in holds[peer]:
                plan.received(peer, c)
            else:
                plan.lacks(peer, c)
    assert plan.stuck({"A", "B"}) and not plan.complete
    assert plan.done == set(chunks) - {missing}
    assert plan.next_batch("A") == [] and plan.next_batch("B") == []
    assert plan.next_batch("C") == [missing]  # a new provider is still asked


def test_peer_scores_stay_bounded_and_keep_recent_bans(monkeypatch):
    """A daemon meets peers without end: scores and rates are kept for the most recent
    MAX_PEERS, bans apart for the most recent MAX_BANS (a flood of new identities does not
    unban a liar before that many other bans)."""
    from memnet.net import peer_scores

    monkeypatch.setattr(peer_scores, "MAX_PEERS", 50)
    monkeypatch.setattr(peer_scores, "MAX_BANS", 5)
    scores = peer_scores.PeerScores()
    scores.lied("liar")
    for i in range(200):                      # honest newcomers push the liar's score out...
        scores.delivered(f"peer{i}", 1 << 20)
        scores.observe_rate(f"peer{i}", 1 << 20, 0.5)
    assert len(scores.score) == 50 and len(scores.rate) <= 50
    assert "liar" not in scores.score and scores.banned("liar")   # ...but not its ban
    assert scores.stall_timeout("peer199", 1 << 20) < peer_scores.STALL_CEILING
    assert scores.stall_timeout("peer0", 1 << 20) == peer_scores.STALL_TIMEOUT   # forgotten: unmeasured
    for i in range(5):                        # five newer bans do push it out
        scores.lied(f"sybil{i}")
    assert not scores.banned("liar") and scores.banned("sybil4") and len(scores.bans) == 5
    for _ in range(4):                        # four stalls are a ban, as before
        scores.stalled("slow")
    assert scores.banned("slow")
    order = scores.order([PeerInfo(ID(b"\x00" * 34), []), PeerInfo(ID(b"\x01" * 34), [])])
    assert len(order) == 2
