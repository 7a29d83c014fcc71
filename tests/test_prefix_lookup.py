"""The pure parts of the swarm prefix lookup (memnet/net/prefix_lookup.py): which key wins, which
keys the DHT still has to be asked for, how offers from several peers merge. The network side
runs against real daemons in test_kv_swarm.py (a neighbour, the DHT alone, a lying neighbour)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from memnet.errors import UsageError
from memnet.net.prefix_lookup import MAX_KEYS, MAX_PROBES, ProbeResult, check_probes, longest_held
from memnet.net.host import key_pair


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
