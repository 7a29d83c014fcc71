"""Running a campaign script (scripts/campaign_*.py) in its short form, as the suite does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_campaign(tmp_path: Path, script: str, *args: str, timeout: float) -> dict | list:
    """Run scripts/<script> with args and --json; assert it exits 0 (no findings); its JSON."""
    out = tmp_path / "campaign.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args, "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(out.read_text())
