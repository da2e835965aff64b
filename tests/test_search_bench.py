"""benchmarks/search.py's synthetic-shape mode (the GPU timing command) runs end to end on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_synthetic_timing_mode_runs(tmp_path):
    out = tmp_path / "syn.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search.py"), "--synthetic", "tiny", "--device", "cpu",
                        "--generations", "2", "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["generations"] == 2 and len(r["seconds_per_generation"]) == 2
    assert r["average_bits"] <= r["target_bits"] and r["final_kl"] >= 0
