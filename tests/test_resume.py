"""Kill a real quantization subprocess mid-run; the resumed checkpoint is byte-identical."""

import os
import signal
import subprocess
import sys

from _tiny_models import save_tiny


def _files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_kill_and_resume_is_byte_identical(tmp_path):
    model = save_tiny(tmp_path / "tiny", "llama", layers=4)
    env = {**os.environ, "MATGPTQ_CACHE": str(tmp_path / "cache"), "TOKENIZERS_PARALLELISM": "false"}

    def run(out, extra_env=None):
        cmd = [sys.executable, "-m", "matgptq.cli", "-q", "quantize", str(model), "--out", str(out),
               "--bits", "8,4,3", "--group-size", "32", "--calib", "sotu", "--calib-samples", "4",
               "--seq-len", "64", "--device", "cpu"]
        return subprocess.run(cmd, env={**env, **(extra_env or {})}, capture_output=True, text=True, timeout=300)

    killed = run(tmp_path / "a", {"MATGPTQ_KILL_AFTER_BLOCK": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = tmp_path / "a.partial"
    assert partial.is_dir() and not (tmp_path / "a").exists()
    assert sorted(p.name for p in partial.glob("model-*")) == ["model-00001-of-00005.safetensors",
                                                               "model-00002-of-00005.safetensors"]
    stamp = {p.name: p.stat().st_mtime_ns for p in partial.glob("model-*")}

    resumed = run(tmp_path / "a")
    assert resumed.returncode == 0, resumed.stderr
    assert not partial.exists()
    # the finished blocks were not solved again
    for name, t in stamp.items():
        assert (tmp_path / "a" / name).stat().st_mtime_ns == t

    fresh = run(tmp_path / "b")
    assert fresh.returncode == 0, fresh.stderr
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert sorted(a) == sorted(b)
    assert [n for n in a if a[n] != b[n]] == []
