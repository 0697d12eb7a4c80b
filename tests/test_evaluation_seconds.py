"""scripts/evaluation_seconds.py: one JSON line per cell with its fit and evaluation seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluation_seconds.py"


def test_each_cell_gets_a_line_whose_seconds_split_its_wall_time(tmp_path):
    out = tmp_path / "seconds.jsonl"
    cmd = [sys.executable, str(SCRIPT), str(out), "--datasets", "8gaussians", "--methods", "gaussian,kde"]
    subprocess.run([*cmd, "--profile", "smoke"], check=True, capture_output=True, timeout=300)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["method"], r["dataset"]) for r in lines] == [("gaussian", "8gaussians"), ("kde", "8gaussians")]
    for r in lines:
        assert r["fit_wall_s"] >= 0 and r["eval_s"] > 0 and r["log_prob_s"] > 0
        assert r["log_prob_s"] < r["eval_s"]  # the test likelihood is part of the evaluation
