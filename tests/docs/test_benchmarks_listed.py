"""benchmarks/README.md lists every script in benchmarks/ and none that is not there."""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_every_benchmark_script_is_listed():
    listed = set(re.findall(r"^\| `(\w+\.py)` \|", (BENCHMARKS / "README.md").read_text(), re.M))
    present = {path.name for path in BENCHMARKS.glob("*.py")}
    assert not present - listed, f"benchmarks/README.md misses {sorted(present - listed)}"
    assert not listed - present, f"listed but absent: {sorted(listed - present)}"
