"""Running the real `memnet` command line in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    code: int
    out: str
    err: str


def memnet(home: Path, *args: str, check: bool = True, timeout: float = 120) -> Result:
    env = {**os.environ, "MEMNET_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"memnet {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr}")
    return result


def assert_one_line_error(result: Result, phrase: str) -> None:
    """A user mistake: non-zero exit, one 'error:' line on stderr naming the problem, no traceback."""
    assert result.code != 0, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), result.err
    assert phrase.lower() in lines[0].lower(), (phrase, result.err)
    assert "Traceback" not in result.err
