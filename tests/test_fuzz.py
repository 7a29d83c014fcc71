"""Short versions of the fuzzing campaign (scripts/campaign_fuzz.py): the sans-IO MIP decoder and
sessions under hypothesis-generated and mutated streams (a few thousand, not 100 000), the
coverage-guided engine for a few seconds, and a live daemon under a few hundred fuzzed streams
over real libp2p connections while an honest daemon gets cubes from it (tests/test_campaigns.py)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memnet.errors import MemnetError
from tests import fuzz_targets
from tests.campaign_helpers import run_campaign

SEEDS = fuzz_targets.seeds()


def _subclasses(cls: type) -> set[type]:
    return {cls} | {s for c in cls.__subclasses__() for s in _subclasses(c)}


ENDINGS = {"ok", "short"} | {c.__name__ for c in _subclasses(MemnetError)}


@st.composite
def mutated_seed(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, len(data)))
        if op == 0 and i < len(data):
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            data[i:i] = draw(st.binary(min_size=1, max_size=12))
        elif op == 2:
            del data[i:i + draw(st.integers(1, 12))]
        else:
            del data[max(i, 2):]
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(mutated_seed(), st.binary(max_size=600)))
def test_the_decoder_and_sessions_end_every_stream_in_a_memnet_error_or_ok(data):
    # one_input lets any other exception through, and asserts the buffers stay within a frame
    assert fuzz_targets.one_input(data) in ENDINGS


def test_every_seed_is_valid_and_every_message_type_is_covered():
    fuzz_targets.SEEN.clear()
    outcomes = [fuzz_targets.one_input(s) for s in SEEDS]
    assert outcomes.count("ok") >= len(SEEDS) - 2   # the two oversized length prefixes are refused
    from memnet.net import wire
    assert set(fuzz_targets.SEEN) == set(wire.FIELDS)


def test_coverage_guided_engine_runs_clean(tmp_path):
    row = run_campaign(tmp_path, "campaign_fuzz.py", "sans-io", "--runs", "3000", "--seed", "7", timeout=120)
    assert row["runs"] == 3000 and row["crashes"] == [] and row["coverage_edges"] > 100
