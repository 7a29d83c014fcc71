"""A fetch holds a bounded part of the cube, not all of it (reliability finding 5): verified
chunks go to the store's staging as they come, the end checks the cube chunk by chunk from the
store, and the commit writes only the manifest and references. Real libp2p hosts on loopback,
a real MipServer and LMDB stores; Python's own allocations traced (tracemalloc)."""

from __future__ import annotations

import random
import time
import tracemalloc
from contextlib import asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo

from memnet.cube.build import ChunkReader
from memnet.errors import StoreFullError
from memnet.net import fetch as fetch_mod
from memnet.net import wire
from memnet.net.host import build_host
from memnet.net.peer_scores import PeerScores
from memnet.net.server import MipServer
from memnet.store import Store
from tests import factories

pytestmark = pytest.mark.slow   # tens of MiB through real hosts: the full suite, not the fast tier
LOCAL = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
MIP = TProtocol(wire.PROTOCOL_ID)
MIB = 1 << 20


class SlowDisk(Store):
    """A store whose staging commits take a while, as on a slow disk: the fetch must wait for
    it rather than pile verified chunks up in memory."""

    staged = 0

    def stage_chunks(self, chunks):
        time.sleep(0.02)
        self.staged += sum(len(d) for _, d in chunks)
        super().stage_chunks(chunks)


@pytest.fixture(scope="module")
def cube():
    # 24 items of 1 MiB of random text: a 24 MiB plaintext payload in 96 distinct chunks of 256 KiB
    rng = random.Random(5)
    texts = [rng.randbytes(MIB // 2 - 64).hex() for _ in range(24)]
    return factories.plaintext_cube(texts=texts, chunk_size=256 * 1024)


@asynccontextmanager
async def provider_and_fetcher(provider_store: Store):
    """A host serving provider_store over MIP and a fetcher connected to it: yields
    (fetcher host, find) where find names the provider."""
    provider, fetcher = build_host(factories.key("provider")), build_host(factories.key("fetcher"))
    async with provider.run(LOCAL), fetcher.run(LOCAL):
        provider.set_stream_handler(MIP, MipServer(provider_store).handle)
        info = PeerInfo(provider.get_id(), provider.get_addrs())
        await fetcher.connect(info)

        async def find():
            return [info]
        yield fetcher, find


def test_a_24_mib_fetch_holds_a_few_mib_and_commits_from_staging(tmp_path, cube, monkeypatch):
    monkeypatch.setattr(fetch_mod, "UNSTAGED_LIMIT", 2 * MIB)
    provider_store, mine = Store(str(tmp_path / "provider")), SlowDisk(str(tmp_path / "mine"))
    provider_store.put(cube)
    peaks = {}

    async def scenario():
        async with provider_and_fetcher(provider_store) as (fetcher, find):
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                report = await fetch_mod.fetch_cube(fetcher, mine, cube.cube_id, find, scores=PeerScores())
                peaks["fetch"] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            peaks["report"] = report

    try:
        trio.run(scenario)
        report = peaks["report"]
        # every chunk went through staging; the cube the report names reads from the store
        assert mine.staged == cube.manifest.size
        assert isinstance(report.cube.chunks, ChunkReader)
        assert mine.read_payload(cube.cube_id) == cube.payload()
        assert mine.verify(cube.cube_id).manifest == cube.manifest
        # the commit took the staged chunks over: none is left marked as staged (for GC)
        assert mine._read(lambda txn: txn.stat(mine._db["staged"])["entries"]) == 0
        # the whole cube is 24 MiB: before, the fetch kept every chunk and joined the payload to
        # check its items (139 MiB traced, measured); now what is in flight (4 pipelined requests of 4
        # chunks), waiting for the disk (2 MiB here) and one item being checked: 10.7 MiB
        assert peaks["fetch"] < 12 * MIB, f"peak {peaks['fetch'] / MIB:.1f} MiB"
    finally:
        provider_store.close()
        mine.close()


class FillingDisk(Store):
    """A store whose disk fills after `room` bytes of staged chunks."""

    room = 0

    def stage_chunks(self, chunks):
        size = sum(len(d) for _, d in chunks)
        if size > self.room:
            raise StoreFullError("the disk holding the store is full; nothing of this write was kept")
        self.room -= size
        super().stage_chunks(chunks)


def test_a_full_disk_mid_get_is_one_line_and_what_was_staged_is_kept(tmp_path, cube):
    """Finding 8: a full disk during a get is one StoreFullError (not an ExceptionGroup) that says
    what was kept, and a later get resumes from the staged chunks."""
    provider_store, mine = Store(str(tmp_path / "provider")), FillingDisk(str(tmp_path / "mine"))
    provider_store.put(cube)
    mine.room = 8 * MIB
    outcome = {}

    async def scenario():
        async with provider_and_fetcher(provider_store) as (fetcher, find):
            try:
                await fetch_mod.fetch_cube(fetcher, mine, cube.cube_id, find, scores=PeerScores())
            except StoreFullError as exc:
                outcome["error"] = exc
            staged = mine._read(lambda txn: txn.stat(mine._db["staged"])["entries"])
            mine.room = 1 << 40                       # room again: the get resumes
            report = await fetch_mod.fetch_cube(fetcher, mine, cube.cube_id, find, scores=PeerScores())
            outcome.update(staged=staged, second=sum(report.bytes_from.values()))

    try:
        trio.run(scenario)
        error = outcome["error"]
        assert type(error) is StoreFullError and "\n" not in str(error)
        assert "already staged are kept" in str(error) and "resumes" in str(error)
        assert 0 < outcome["staged"] * 256 * 1024 <= 8 * MIB     # what fitted was kept
        # the second get moved only what the first had not staged
        assert outcome["second"] == cube.manifest.size - outcome["staged"] * 256 * 1024
        assert mine.read_payload(cube.cube_id) == cube.payload()
    finally:
        provider_store.close()
        mine.close()
