"""The README's chaos-soak claim, checked as the README states it (minutes: marked ``slow``).

``benchmarks/chaos_soak.py`` at its defaults: 20 ``kill -9``s of a MER daemon while 8,000 examples
arrive; learned = produced = committed = 8,000 and the final model bit-identical to an uninterrupted
run. ``make test`` skips it (``-m "not slow and not network"``); ``make test-all`` runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "chaos_soak.py"


def test_chaos_soak_loses_nothing_learns_nothing_twice_and_orphans_no_server() -> None:
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--json"], capture_output=True, text=True, timeout=660, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["kills"] == 20 and result["restored"] > 0, result
    assert result["produced"] == result["learned"] == result["offset"] == result["committed"] == 8000
    assert result["identical"] and result["learner_state_identical"] and result["max_abs_diff"] == 0
    assert result["orphans"] == 0 and result["dead_letters"] == 0
