"""Print the ratio benchmarks (``track_*`` results) of the newest asv results file.

Used by ``make bench`` after ``asv run``; reads ``.asv/results/<machine>/*.json``.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / ".asv" / "results"


def newest_results() -> Path:
    files = [p for p in RESULTS.glob("*/*.json") if p.name != "machine.json"]
    if not files:
        sys.exit(f"no asv results under {RESULTS}: run `make bench` first")
    return max(files, key=lambda p: p.stat().st_mtime)


def rows(path: Path):
    """(benchmark, parameter combination, value) for every track_ result."""
    data = json.loads(path.read_text(encoding="utf-8"))
    cols = data.get("result_columns", ["result", "params"])
    i_res, i_par = cols.index("result"), cols.index("params")
    for name, entry in sorted(data["results"].items()):
        if ".track_" not in name:
            continue
        values, params = entry[i_res], entry[i_par]
        values = values if isinstance(values, list) else [values]
        combos = list(itertools.product(*params)) if params else [()]
        for combo, value in zip(combos, values, strict=False):
            yield name, ", ".join(str(c).strip("'") for c in combo), value


def main() -> None:
    path = newest_results()
    print(f"ratios and tracked values from {path.relative_to(RESULTS.parent.parent)}")
    for name, combo, value in rows(path):
        shown = "failed" if value is None else f"{value:.4g}"
        print(f"  {name}[{combo}] = {shown}")


if __name__ == "__main__":
    main()
