"""The report's tuning section: how each row was configured (tuned with N trials, or its profile),
the parameters each study chose, the compute every method's tuning used and what pruning saved,
and the change from the profile to the tuned parameters where a run has both.

The studies are read from the run directory's ``tuning.sqlite`` (or from the run directory a
``run --params-from`` read them from); rows carry their study's summary in ``info["tuning"]``.

Example::

    blocks = section(data)   # [] for a run without tuning
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.cells import TUNED_SUFFIX
from harness.report.blocks import Block, Heading, Table, Text
from harness.report.data import ReportData
from harness.report.tables import significant

OBJECTIVE_TEXT = {
    "val_loglik": "mean validation log-likelihood (nats, higher is better)",
    "val_energy": "validation energy distance of samples (lower is better)",
}
INTRO = (
    "Every method with a search space had the same tuning budget ({budget}) of a seeded Optuna study "
    "(TPE sampler, {pruner} pruner) per dataset, scored on the validation split only; the first trial "
    "runs the profile's own values. The test split is read only by the test cells of the chosen "
    "parameters, rows named `X {suffix}`. Methods with a likelihood were selected on the {loglik}."
)
ENERGY_NOTE = " {methods} have no likelihood and were selected on a different criterion, the {energy}."


def study_records(run_dir: Path | None, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Every study behind the run (``harness.studies.summaries_as_dicts``): those of ``run_dir``, else
    of the run directory its config read choices from (``run --params-from``); [] without any."""
    from harness.studies import summaries_as_dicts

    for candidate in (run_dir, (meta.get("config") or {}).get("params_from")):
        if candidate is not None and (Path(candidate) / "tuning.sqlite").is_file():
            return summaries_as_dicts(candidate)
    return []


def section(data: ReportData) -> list[Block]:
    """The tuning section; [] when the run has neither studies nor tuned rows."""
    studies = data.studies
    notes = _row_notes(data)
    if not studies and not notes:
        return []
    settings = data.meta.get("tuning") or {}
    blocks: list[Block] = [Heading("Tuning", "t-tuning", level=2), Text(_intro(studies, settings), note=False)]
    blocks += _configuration(data, notes)
    if studies:
        blocks += _chosen(studies) + _compute(studies)
    blocks += _tuned_minus_default(data)
    return blocks


def _intro(studies: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    if settings.get("trials") is not None:
        budget = f"{settings['trials']} trials"
    elif settings.get("budget_s") is not None:
        budget = f"{settings['budget_s']:g} s of fitting"
    else:
        budget = "trials"
    text = INTRO.format(
        budget=budget, pruner=settings.get("pruner", "median"), suffix=TUNED_SUFFIX, loglik=OBJECTIVE_TEXT["val_loglik"]
    )
    energy = sorted({s["row"] for s in studies if s["objective"] == "val_energy"})
    if energy:
        text += ENERGY_NOTE.format(methods=", ".join(f"`{m}`" for m in energy), energy=OBJECTIVE_TEXT["val_energy"])
    return text


def _row_notes(data: ReportData) -> dict[tuple[str, str], dict[str, Any]]:
    """(row label, dataset) -> the tuning note of its rows (``info["tuning"]``) where a row has one."""
    notes = {}
    for r in data.rows:
        note = (r.get("info") or {}).get("tuning")
        if note:
            notes[(r["method"], r["dataset"])] = note
    return notes


def _configuration(data: ReportData, notes: dict[tuple[str, str], dict[str, Any]]) -> list[Block]:
    """One line per row label and dataset: tuned (trials, pruned, best validation) or its profile."""
    rows = []
    for m in data.methods:
        cells = []
        for ds in data.datasets:
            note = notes.get((m, ds))
            if note is None:
                cells.append("default profile")
            elif not note.get("tuned"):
                cells.append("default profile (no search space)")
            else:
                best = note.get("best_value")
                shown = significant(best, 4) if best is not None else "–"
                seed = "" if note.get("split_seed") is None else ", per seed"
                cells.append(f"tuned ({note['trials']} trials, {note['pruned']} pruned{seed}, best validation {shown})")
        rows.append([m] + cells)
    return [Heading("How each row was configured", "t-tuning-rows"), Table(["method"] + data.datasets, rows)]


def _chosen(studies: list[dict[str, Any]]) -> list[Block]:
    """The chosen parameters per study beside the profile's trial (the first) and the search space."""
    rows = []
    for s in studies:
        params = ", ".join(f"{k}={_value(v)}" for k, v in sorted(s["best_params"].items())) or "–"
        seed = "all" if s["seed"] is None else str(s["seed"])
        best = significant(s["best_value"], 4) if s["best_value"] is not None else "–"
        default = significant(s["default_value"], 4) if s["default_value"] is not None else "–"
        rows.append([s["row"], s["dataset"], seed, params, best, default])
    spaces = {s["row"]: s["space"] for s in studies}
    space_text = "; ".join(f"`{m}`: " + ", ".join(f"{k} {v}" for k, v in sp.items()) for m, sp in spaces.items())
    return [
        Heading("Chosen parameters", "t-tuning-chosen"),
        Table(["method", "dataset", "split seed", "chosen", "best validation", "profile's validation"], rows),
        Text(f"Search spaces: {space_text}."),
    ]


def _compute(studies: list[dict[str, Any]]) -> list[Block]:
    """Compute per method over its studies: trials, pruned, failed, CPU-seconds, pruning's saving."""
    per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for s in studies:
        p = per[s["row"]]
        for key in ("trials", "pruned", "failed", "cpu_s", "pruning_saved_cpu_s"):
            p[key] += s[key] or 0.0
        if s["full_fit_cpu_s"]:
            p["full_fits_cpu_s"] += s["trials"] * s["full_fit_cpu_s"]
    rows = []
    for m, p in per.items():
        saved = p["pruning_saved_cpu_s"] / (p["cpu_s"] + p["pruning_saved_cpu_s"]) if p["cpu_s"] else 0.0
        ratio = p["cpu_s"] / p["full_fits_cpu_s"] if p["full_fits_cpu_s"] else math.nan
        rows.append(
            [
                m,
                f"{int(p['trials'])}",
                f"{int(p['pruned'])}",
                f"{int(p['failed'])}",
                significant(p["cpu_s"], 3),
                significant(ratio, 2) if math.isfinite(ratio) else "–",
                f"{100 * saved:.0f}%",
            ]
        )
    return [
        Heading("Compute of the tuning", "t-tuning-compute"),
        Table(["method", "trials", "pruned", "failed", "CPU s", "of N full fits", "saved by pruning"], rows),
        Text(
            "CPU s: process CPU time of every trial (fit and validation scoring), summed over the method's "
            "studies; equal trials can still mean unequal compute. Of N full fits: that time over N times "
            "the median completed trial's. Saved by pruning: the pruned trials' time had they run to the "
            "end (each scaled by its planned steps over the steps it reached; phases not begun are not "
            "counted, so this is a lower bound), as a share of the study's time without pruning."
        ),
    ]


def _tuned_minus_default(data: ReportData) -> list[Block]:
    """Test log-likelihood and energy distance of ``X (tuned)`` minus ``X`` where the run has both."""
    suffix = f" {TUNED_SUFFIX}"
    pairs = [(m, m.removesuffix(suffix)) for m in data.methods if m.endswith(suffix)]
    pairs = [(t, d) for t, d in pairs if d in data.methods]
    blocks: list[Block] = []
    for key, label in (
        ("test_loglik", "test log-likelihood (nats; > 0: tuning helped)"),
        ("energy_distance", "energy distance (< 0: tuning helped)"),
    ):
        table = data.table(key)
        if table is None or not pairs:
            continue
        rows = []
        for tuned, default in pairs:
            cells = []
            for ds in data.datasets:
                a, b = table.entries.get((tuned, ds)), table.entries.get((default, ds))
                ok = a is not None and b is not None and a.state == b.state == "value"
                cells.append(_difference(a, b) if ok else "–")
            rows.append([default] + cells)
        blocks += [Text(f"Tuned minus profile, {label}:", note=False), Table(["method"] + data.datasets, rows)]
    if blocks:
        blocks.insert(0, Heading("Tuned minus the profile's parameters", "t-tuning-change"))
        blocks.append(
            Text(
                "Each entry is the difference of the two rows' means over seeds, ± the root sum of squares of "
                "their 95% half-widths where both have one."
            )
        )
    return blocks


def _difference(a, b) -> str:
    diff = a.mean - b.mean
    if math.isfinite(a.half_width) and math.isfinite(b.half_width):
        return f"{significant(diff, 3)} ± {significant(math.hypot(a.half_width, b.half_width), 2)}"
    return significant(diff, 3)


def _value(v: Any) -> str:
    return significant(v, 3) if isinstance(v, float) else str(v)
