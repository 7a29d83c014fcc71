"""When a find's GET_PROVIDERS wave is over (pure: net/discovery.py runs it over trio, the swarm
simulator over simulated time, so both follow the same rule).

A find asks the k closest peers of a key for providers all at once. Waiting for every answer
makes the find as slow as its slowest peer, and a peer that is off costs the full query timeout.
With `grace` set, the wave ends `grace` seconds after the first answer that names a provider
(or after the start, when this node's own provider store already names one): more answers rarely
add a provider the fetch would need, since a record is stored at all k peers. It also ends when
every peer has answered; with grace None it always waits for everyone.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

QUERY_TIMEOUT = 10.0   # s: any one GET_PROVIDERS request


class ProviderWave:
    def __init__(self, asked: int, grace: float | None, local: Iterable[Hashable] = (),
                 timeout: float = QUERY_TIMEOUT):
        self.asked, self.grace, self.timeout = asked, grace, timeout
        self.answered = 0
        self.providers: dict[Hashable, None] = dict.fromkeys(local)
        # providers this node already knows count as found at the start: grace for more, no longer
        self.first_found: float | None = 0.0 if self.providers else None

    def answer(self, at: float, providers: Iterable[Hashable] | None) -> None:
        """One peer's answer at time `at` (seconds since the wave started; None: it failed)."""
        self.answered += 1
        new = [p for p in providers or () if p not in self.providers]
        self.providers.update(dict.fromkeys(new))
        if new and self.first_found is None:
            self.first_found = at

    def deadline(self) -> float:
        """Seconds after the start of the wave at which to stop waiting."""
        if self.grace is not None and self.first_found is not None:
            return min(self.timeout, self.first_found + self.grace)
        return self.timeout

    def done(self, now: float) -> bool:
        return self.answered >= self.asked or now >= self.deadline()


def run_wave(answers: list[tuple[float, list | None]], grace: float | None,
             local: Iterable[Hashable] = (), timeout: float = QUERY_TIMEOUT) -> tuple[float, list]:
    """The wave over known answer times (an answer at or after the timeout is a failure):
    (seconds it took, providers heard by then)."""
    wave = ProviderWave(len(answers), grace, local, timeout)
    end = 0.0
    for at, providers in sorted(answers, key=lambda a: a[0]):
        if wave.done(at) or at > wave.deadline():
            return min(wave.deadline(), max(end, at)), list(wave.providers)
        wave.answer(min(at, timeout), providers if at < timeout else None)
        end = min(at, timeout)
    return end, list(wave.providers)
