"""Measured costs that decide fetch-or-recompute: prefill seconds per model, fetch bandwidth,
and how fast a stored KV cube loads. Samples come from this node's own runs (HOME/perf.json);
the decision itself is a pure function.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from memnet.files import write_atomic

PERF_FILE = "perf.json"
KEEP = 8                               # newest samples kept per series
DEFAULT_LOAD_RATE = 500 * 1024 * 1024  # bytes/s assumed before the first cube load is measured
FETCH_OVERHEAD = 0.05                  # s: provider lookup reply + manifest round trip
FETCH_DEADLINE_FLOOR = 1.0             # s: a fetch is never given up sooner (jitter on tiny prefills)
FETCH_DEADLINE_UNMEASURED = 120.0      # s: before any prefill is measured (an 8B model's 3 000 tokens on a laptop CPU)


@dataclass(frozen=True)
class Choice:
    fetch: bool
    fetch_seconds: float | None      # None: no fetch measured on this node yet
    prefill_seconds: float | None    # None: no prefill measured on this node yet

    def reason(self) -> str:
        verb = "fetch" if self.fetch else "recompute"
        if self.fetch_seconds is None or self.prefill_seconds is None:
            missing = "bandwidth" if self.fetch_seconds is None else "prefill time"
            return f"{verb}: no {missing} measured yet (this fetch measures it)"
        return (f"{verb}: fetch+load ≈ {self.fetch_seconds:.2f} s vs prefill ≈ "
                f"{self.prefill_seconds:.2f} s")


def estimate_prefill(samples: list[list[float]], n_tokens: int) -> float | None:
    """Prefill seconds for n_tokens from (tokens, seconds) samples: the rate of the sample
    nearest in length (attention makes the cost grow faster than linearly, so the nearest length
    is a better guide than an average)."""
    usable = [s for s in samples if s[0] > 0 and s[1] > 0]
    if not usable:
        return None
    tokens, seconds = min(usable, key=lambda s: abs(s[0] - n_tokens))
    return seconds * n_tokens / tokens


def rate(samples: list[list[float]], default: float | None) -> float | None:
    """Bytes per second over the kept (bytes, seconds) samples."""
    total_bytes = sum(s[0] for s in samples if s[1] > 0)
    total_seconds = sum(s[1] for s in samples if s[1] > 0)
    return total_bytes / total_seconds if total_bytes and total_seconds else default


def choose(n_bytes: int, prefill_seconds: float | None, bandwidth: float | None, load_rate: float) -> Choice:
    """Fetch when it is measured to be faster than the prefill it saves. With either side not
    measured yet, fetch: that is how this node learns its bandwidth (and a peer's prefill is
    then reused rather than redone)."""
    if bandwidth is None:
        return Choice(True, None, prefill_seconds)
    fetch_seconds = FETCH_OVERHEAD + n_bytes / bandwidth + n_bytes / load_rate
    if prefill_seconds is None:
        return Choice(True, fetch_seconds, None)
    return Choice(fetch_seconds < prefill_seconds, fetch_seconds, prefill_seconds)


def fetch_deadline(prefill_seconds: float | None) -> float:
    """How long a chosen fetch may take before the prefill it replaces is computed instead: as
    long as that prefill (the ski-rental rule: at worst twice the better choice). A provider
    whose upload is shared by a crowd of fetchers can take hours where the estimate said
    seconds (docs/simulation.md: without it, half a flash crowd was still waiting after an hour).
    Before this node has measured a prefill: a fixed, generous bound."""
    if prefill_seconds is None:
        return FETCH_DEADLINE_UNMEASURED
    return max(FETCH_DEADLINE_FLOOR, prefill_seconds)


def keep_waiting(elapsed: float, done_bytes: int, total_bytes: int, deadline: float) -> bool:
    """Past a fetch's deadline: wait on only while the rest of the cube, at the rate the fetch
    has had so far, comes sooner than the prefill it replaces (about `deadline`) would take from
    now. A fetch nearly done is not thrown away; one that trickles is."""
    if elapsed < deadline:
        return True
    if done_bytes <= 0 or elapsed <= 0:
        return False
    return (total_bytes - done_bytes) * elapsed / done_bytes < deadline


def worth_asking(prefill_seconds: float | None, lookup_seconds: float | None) -> bool:
    """Ask the swarm for a longer cached prefix only when the prefill it could save is measured
    to take longer than a swarm lookup does here (a GPU prefills 2 000 tokens of an 8B model in
    under a second; a lookup over a residential DHT takes seconds: docs/simulation.md). Either
    side unmeasured: ask, which is how both get measured."""
    return prefill_seconds is None or lookup_seconds is None or prefill_seconds > lookup_seconds


def median(values: list[float]) -> float | None:
    xs = sorted(values)
    return xs[len(xs) // 2] if xs else None


class PerfBook:
    """The node's measurements, persisted as JSON (small, rewritten atomically)."""

    def __init__(self, home: Path):
        self.path = home / PERF_FILE
        self._lock = threading.Lock()  # a server's request threads share one book
        try:
            doc = json.loads(self.path.read_text())
            self.doc = doc if isinstance(doc, dict) else {}
        except (FileNotFoundError, ValueError):
            self.doc = {}

    def _series(self, *keys: str) -> list[list[float]]:
        node = self.doc
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                return []
        series = node.setdefault(keys[-1], [])
        return series if isinstance(series, list) else []

    def _add(self, sample: list[float], *keys: str) -> None:
        with self._lock:
            series = self._series(*keys)
            series.append(sample)
            del series[:-KEEP]
            write_atomic(self.path, json.dumps(self.doc, indent=1).encode())

    def prefill_samples(self, model: bytes) -> list[list[float]]:
        return self._series("prefill", model.hex())

    def add_prefill(self, model: bytes, n_tokens: int, seconds: float) -> None:
        if n_tokens >= 16:  # tiny runs are dominated by fixed overhead
            self._add([n_tokens, round(seconds, 6)], "prefill", model.hex())

    def bandwidth(self) -> float | None:
        return rate(self._series("fetch"), None)

    def add_fetch(self, n_bytes: int, seconds: float) -> None:
        if n_bytes >= 64 * 1024:
            self._add([n_bytes, round(seconds, 6)], "fetch")

    def lookup_seconds(self) -> float | None:
        """The median of the kept swarm prefix lookups (None: none measured yet)."""
        return median([s[0] for s in self._series("lookup")
                       if isinstance(s, list) and s and isinstance(s[0], (int, float)) and s[0] >= 0])

    def add_lookup(self, seconds: float) -> None:
        self._add([round(seconds, 6)], "lookup")

    def load_rate(self) -> float:
        return rate(self._series("load"), DEFAULT_LOAD_RATE)

    def add_load(self, n_bytes: int, seconds: float) -> None:
        self._add([n_bytes, round(seconds, 6)], "load")
