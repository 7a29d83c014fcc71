"""The swarm prefix lookup's planner (memnet/net/prefix_plan.py, pure): which key wins, which
keys the DHT still has to be asked for, how offers from several peers merge, which offers are lies. The network side
runs against real daemons in test_kv_swarm.py (a neighbour, the DHT alone, a lying neighbour)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from memnet.errors import PeerError, UsageError
from memnet.net.host import key_pair
from memnet.net.prefix_plan import (CUBES_PER_PROBE, MAX_KEYS, MAX_PROBES, PrefixLookup, ProbeResult, check_offer,
                                    check_probes, longest_held)
from tests import factories


def key(i: int) -> bytes:
    return hashlib.sha256(b"key %d" % i).digest()


def peer() -> PeerInfo:
    return PeerInfo(ID.from_pubkey(key_pair(Ed25519PrivateKey.generate()).public_key), [])


KEYS = [key(i) for i in range(9)]


def test_longest_held_is_the_last_key_with_cubes():
    assert longest_held(KEYS, {}) == -1
    assert longest_held(KEYS, {KEYS[0]: [b"c"], KEYS[3]: [b"c"]}) == 3
    assert longest_held(KEYS, {KEYS[8]: [b"c"], KEYS[3]: [b"d"]}) == 8
    assert longest_held(KEYS, {KEYS[5]: []}) == -1  # an empty answer holds nothing
    assert longest_held(KEYS, {key(99): [b"c"]}) == -1  # keys of another probe do not count


def test_dht_is_asked_only_for_longer_keys():
    result = ProbeResult()
    assert result.dht_start() == 0  # nothing from the neighbours: every key
    result.offer(7, b"cube", b"manifest", peer())
    assert result.dht_start() == 8  # only the whole-prompt key can beat block 8


def test_a_longer_key_replaces_shorter_offers_and_holders_merge():
    a, b, c = peer(), peer(), peer()
    result = ProbeResult()
    result.offer(2, b"short", b"m-short", a)
    result.offer(5, b"long", b"m-long", b)
    result.offer(3, b"middle", b"m-middle", c)  # shorter than the best: ignored
    result.offer(5, b"long", b"m-long", c)      # a second holder of the same cube
    result.offer(5, b"long", b"m-long", b)      # the same holder again: once
    result.offer(5, b"other", b"m-other", a)    # another cube under the same key
    assert result.index == 5
    assert set(result.cubes) == {b"long", b"other"}
    assert [h.peer_id for h in result.cubes[b"long"][1]] == [b.peer_id, c.peer_id]
    assert result.cubes[b"long"][0] == b"m-long"


@pytest.mark.parametrize("probes", [
    [], [[]], "keys", [[b"short"]], [[key(0)] * (MAX_KEYS + 1)], [[key(0)]] * (MAX_PROBES + 1),
    [[key(0), "text"]], [KEYS, None],
])
def test_malformed_probes_are_refused(probes):
    with pytest.raises(UsageError):
        check_probes(probes)


def test_good_probes_pass():
    assert check_probes([KEYS, KEYS[:1]]) == [KEYS, KEYS[:1]]


# -- the planner of one lookup, step by step ------------------------------------------------------

def test_neighbours_are_asked_every_key_then_the_dht_only_longer_ones():
    probes = [KEYS, KEYS[:4]]
    lookup = PrefixLookup(probes)
    everything = lookup.everything()
    assert everything == [0, 0]
    assert lookup.keys_to_ask(everything) == KEYS  # the second probe's keys are among the first's: once
    held = {KEYS[2]: [b"cube-2"], KEYS[5]: [b"cube-5a", b"cube-5b"]}
    offers = lookup.offers(everything, held)
    assert [(o.probe, o.index, o.cube_id, o.key) for o in offers] == [
        (0, 5, b"cube-5a", KEYS[5]), (0, 5, b"cube-5b", KEYS[5]), (1, 2, b"cube-2", KEYS[2])]
    lookup.accept([(o, b"m-" + o.cube_id) for o in offers], "neighbour")
    assert lookup.longest() == [6, 3]
    assert lookup.dht_keys(0) == (6, KEYS[6:])   # only longer keys can beat the neighbour's
    assert lookup.dht_keys(1) == (3, KEYS[3:4])
    # the DHT's answers: the longest key with providers wins, and its providers are asked for it alone
    assert PrefixLookup.longest_found({}) == (-1, [])
    assert PrefixLookup.longest_found({0: ["p"], 2: ["q", "r"]}) == (2, ["q", "r"])
    wanted = lookup.wanted_after_dht(0, 6 + 2)
    assert wanted == [8, -1] and lookup.keys_to_ask(wanted) == [KEYS[8]]
    assert lookup.offers(wanted, {KEYS[8]: [b"cube-8"]})[0].index == 8
    # an answer no longer than what is known is not worth a manifest request
    assert lookup.offers(everything, {KEYS[1]: [b"cube-1"]}) == []


def test_offers_are_capped_per_probe_and_merged_by_holder():
    lookup = PrefixLookup([KEYS], same=lambda a, b: a[0] == b[0])
    many = [bytes([i]) * 4 for i in range(CUBES_PER_PROBE + 3)]
    offers = lookup.offers([0], {KEYS[4]: many})
    assert [o.cube_id for o in offers] == many[:CUBES_PER_PROBE]
    lookup.accept([(offers[0], b"m")], ("peer-a", 1))
    lookup.accept([(offers[0], b"m")], ("peer-a", 2))  # the same peer by the caller's test of sameness
    lookup.accept([(offers[0], b"m")], ("peer-b", 1))
    [(cube_id, data, holders)] = lookup.found()
    assert cube_id == many[0] and data == b"m" and [h[0] for h in holders] == ["peer-a", "peer-b"]


def test_check_offer_refuses_forged_manifests_and_foreign_keys():
    cube = factories.activation_cube()
    key = cube.manifest.meta["prefix_keys"][0]
    check_offer(cube.manifest_bytes, cube.cube_id, key, "p")  # authentic and listing the key
    with pytest.raises(PeerError, match="does not authenticate"):
        check_offer(cube.manifest_bytes[:-1] + b"\x00", cube.cube_id, key, "p")  # forged bytes
    with pytest.raises(PeerError, match="does not authenticate"):
        check_offer(cube.manifest_bytes, factories.plaintext_cube().cube_id, key, "p")  # another cube's id
    with pytest.raises(PeerError, match="does not have"):
        check_offer(cube.manifest_bytes, cube.cube_id, hashlib.sha256(b"x").digest(), "p")
    plain = factories.plaintext_cube()
    with pytest.raises(PeerError, match="does not have"):
        check_offer(plain.manifest_bytes, plain.cube_id, key, "p")  # not an activation cube
