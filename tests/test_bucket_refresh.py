"""Kademlia's bucket refresh at join (net/bucket_refresh.py): which buckets, and keys that land in them."""

from __future__ import annotations

import hashlib
import random

import pytest

from memnet.net import bucket_refresh as br


def test_position_is_py_libp2p_placement():
    # py-libp2p sorts by the XOR of SHA-256 digests of the key and of the peer id's bytes
    assert br.position(b"key") == int.from_bytes(hashlib.sha256(b"key").digest(), "big")


def test_common_prefix_counts_leading_shared_bits():
    top = 1 << 255
    assert br.common_prefix(0, top) == 0
    assert br.common_prefix(0, 1) == 255
    assert br.common_prefix(5, 5) == 256
    assert br.common_prefix(top | 7, top | 4) == 254


@pytest.mark.parametrize("cpl", [0, 1, 5, 11])
def test_key_lands_in_the_bucket_asked_for(cpl):
    rng = random.Random(cpl)
    own = br.position(b"me")
    keys = [br.key_in_bucket(own, cpl, rng) for _ in range(3)]
    assert all(len(k) == 32 and br.common_prefix(own, br.position(k)) == cpl for k in keys)
    assert len(set(keys)) == 3
    assert br.key_in_bucket(own, cpl, random.Random(7)) == br.key_in_bucket(own, cpl, random.Random(7))


def test_bucket_outside_the_refreshed_range_is_refused():
    with pytest.raises(ValueError, match="outside"):
        br.key_in_bucket(0, br.MAX_CPL + 1, random.Random(1))
    with pytest.raises(ValueError, match="outside"):
        br.key_in_bucket(0, -1, random.Random(1))


def test_buckets_farther_than_the_nearest_neighbour():
    own = 0
    near = 1 << (255 - 6)              # shares 6 bits: buckets 0..5 are farther
    assert br.buckets_to_refresh(own, [1 << 255, near, 1 << 250]) == [0, 1, 2, 3, 4, 5]
    assert br.buckets_to_refresh(own, []) == []               # alone: nothing to ask
    assert br.buckets_to_refresh(own, [1 << 255]) == []       # nearest in bucket 0: nothing farther
    assert br.buckets_to_refresh(own, [1]) == list(range(br.MAX_CPL + 1))   # capped
