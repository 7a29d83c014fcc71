"""Short versions of the reliability campaigns (scripts/campaign_*.py, issue 17), each run as the
script itself with real daemons on loopback; the full-length runs and their figures are in
docs/reliability.md."""

from __future__ import annotations

import pytest

from tests.campaign_helpers import run_campaign

pytestmark = pytest.mark.slow


def test_a_live_daemon_keeps_serving_through_fuzzed_streams(tmp_path):
    row = run_campaign(tmp_path, "campaign_fuzz.py", "live", "--inputs", "200", "--honest-cubes", "14",
                       "--per-identity", "100", "--pause", "0.3", timeout=300)
    assert row["provider_alive"] and row["tracebacks_in_log"] == 0 and row["unparsable_answers"] == 0
    assert row["honest_failures"] == [] and row["honest_during_s"] and len(row["honest_after_s"]) == 3
    assert row["anon_peak_mb"] - row["anon_idle_mb"] < 100
    assert sum(row["outcomes"].values()) == 200


def test_one_provider_serves_concurrent_fetchers_and_every_copy_verifies(tmp_path):
    rows = run_campaign(tmp_path, "campaign_load.py", "--fetchers", "4", "--big-mib", "8", "--small", "40",
                        "--small-per-fetcher", "15", timeout=300)
    big, small, verify = rows
    assert big["failures"] == [] and len(big["get_s_all"]) == 4
    assert small["failures"] == [] and small["gets"] == 4 * 15
    assert verify["checked"] == 4 * 16 and verify["problems"] == [] and verify["dead"] == []
    assert big["provider_anon_peak_mb"] - big["provider_anon_idle_mb"] < 150
    assert big["status_failures"] == small["status_failures"] == 0


def test_a_swarm_under_sigkill_churn_loses_no_pin_and_every_store_verifies(tmp_path):
    row = run_campaign(tmp_path, "campaign_churn.py", "--nodes", "5", "--duration", "16", "--every", "8",
                       "--settle", "5", timeout=400)
    assert row["sigkills"] >= 2 and row["pins_lost"] == [] and row["unreachable"] == [] and row["stores_bad"] == []
    assert row["pinned_cubes"] >= 10 and sum(v for k, v in row["outcomes"].items() if k.endswith("done")) > 10
