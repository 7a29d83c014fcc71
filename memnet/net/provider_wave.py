"""When a find's GET_PROVIDERS wave is over (pure: net/discovery.py runs it over trio, the swarm
simulator over simulated time, so both follow the same rule).

A find asks the k closest peers of a key for providers all at once. Waiting for every answer
makes the find as slow as its slowest peer, and a peer that is off costs the full query timeout.
With `grace` set, the wave ends `grace` seconds after the first answer that names a provider
(more answers rarely add a provider that the fetch would need: a record is stored at all k
peers), or when every peer has answered; with grace None it always waits for everyone.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

QUERY_TIMEOUT = 10.0   # s: any one GET_PROVIDERS request


class ProviderWave:
    def __init__(self, asked: int, grace: float | None, local: Iterable[Hashable] = ()):
        self.asked, self.grace = asked, grace
        self.answered = 0
        self.providers: dict[Hashable, None] = dict.fromkeys(local)
        self.first_found: float | None = None

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
            return self.first_found + self.grace
        return QUERY_TIMEOUT

    def done(self, now: float) -> bool:
        return self.answered >= self.asked or now >= self.deadline()


def run_wave(answers: list[tuple[float, list | None]], grace: float | None,
             local: Iterable[Hashable] = ()) -> tuple[float, list]:
    """The wave over known answer times: (seconds it took, providers heard by then)."""
    wave = ProviderWave(len(answers), grace, local)
    end = 0.0
    for at, providers in sorted(answers, key=lambda a: a[0]):
        if wave.done(at) or at > wave.deadline():
            return min(wave.deadline(), max(end, at)), list(wave.providers)
        wave.answer(min(at, QUERY_TIMEOUT), providers if at < QUERY_TIMEOUT else None)
        end = min(at, QUERY_TIMEOUT)
    return end, list(wave.providers)
