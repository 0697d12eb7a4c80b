"""Report writer: tables of every metric (methods x datasets, mean ± std over
seeds), built from the results store alone.

``write_report(run_dir)`` writes ``report.md`` and ``results.csv``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from tabulate import tabulate

from harness.store import ResultsStore


@dataclass(frozen=True)
class TableSpec:
    """One report table: where the value lives in a row and which way is better."""

    key: str
    title: str
    better: str  # "higher" | "lower" | "half" (closest to 0.5)
    source: str = "metrics"  # "metrics" | "timings"
    fmt: str = "{:.3f}"
    needs_likelihood: bool = False


TABLES: tuple[TableSpec, ...] = (
    TableSpec("test_loglik", "Test log-likelihood (nats per example, higher is better)", "higher", needs_likelihood=True),
    TableSpec("kl", "KL(p ‖ q) on test points (nats, lower is better; known densities only)", "lower", needs_likelihood=True),
    TableSpec("mmd2", "MMD² against test data (lower is better)", "lower", fmt="{:.4f}"),
    TableSpec("energy_distance", "Energy distance against test data (lower is better)", "lower", fmt="{:.4f}"),
    TableSpec("sliced_wasserstein", "Sliced Wasserstein-2 against test data (lower is better)", "lower", fmt="{:.4f}"),
    TableSpec("c2st_accuracy", "Classifier two-sample test accuracy (0.5 is best)", "half"),
    TableSpec("marginal_kl", "Mean per-dimension marginal KL, the paper's metric (lower is better)", "lower", fmt="{:.4f}"),
    TableSpec("histogram_tv", "Histogram total variation vs the true density (lower is better)", "lower"),
    TableSpec("fit_s", "Fit time (s, lower is better)", "lower", source="timings", fmt="{:.1f}"),
    TableSpec("samples_per_s", "Sampling throughput (samples/s, higher is better)", "higher", source="timings", fmt="{:.3g}"),
    TableSpec("log_prob_per_s", "log_prob throughput (points/s, higher is better)", "higher", source="timings", fmt="{:.3g}", needs_likelihood=True),
)


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One flat record per row: identity columns, metrics.*, timings.*."""
    flat = []
    for r in rows:
        rec = {k: r[k] for k in ("method", "dataset", "seed", "profile", "device", "status", "error", "code_version", "config_hash", "cell_key")}
        for src in ("metrics", "timings"):
            for k, v in (r.get(src) or {}).items():
                if isinstance(v, (dict, list)):
                    continue
                rec[f"{src}.{k}"] = _number(v)
        for phase, secs in ((r.get("timings") or {}).get("fit_phases") or {}).items():
            rec[f"timings.phase.{phase}"] = secs
        flat.append(rec)
    return pd.DataFrame(flat)


def _number(v: Any) -> Any:
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    return v


def _order(values: list[str], preferred: list[str]) -> list[str]:
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def _best(stats: dict[str, tuple[float, float, int]], better: str) -> str | None:
    finite = {m: s[0] for m, s in stats.items() if math.isfinite(s[0])}
    if not finite:
        return None
    key: Callable[[str], float] = {
        "higher": lambda m: -finite[m], "lower": lambda m: finite[m], "half": lambda m: abs(finite[m] - 0.5)
    }[better]
    return min(finite, key=key)


def metric_table(df: pd.DataFrame, spec: TableSpec, methods: list[str], dsets: list[str],
                 kinds: dict[str, str | None], footnotes: dict[str, int]) -> str | None:
    """Markdown table of one metric, or None when no row has it."""
    col = f"{spec.source}.{spec.key}"
    if col not in df.columns or df[col].notna().sum() == 0:
        return None
    body = []
    for ds in dsets:
        stats, failed = {}, {}
        for m in methods:
            sub = df[(df.method == m) & (df.dataset == ds)]
            ok = sub[sub.status == "ok"]
            vals = pd.to_numeric(ok[col], errors="coerce").dropna().to_numpy(dtype=float) if col in ok else np.array([])
            if len(vals):
                stats[m] = (float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, len(vals))
            bad = sub[sub.status == "failed"]
            if len(bad):
                failed[m] = bad.error.iloc[0] or "failed"
        best = _best(stats, spec.better)
        body.append((ds, stats, failed, best))
    header = ["method"] + (["kind"] if spec.needs_likelihood else []) + dsets
    table = []
    for m in methods:
        if spec.needs_likelihood and kinds.get(m) is None:
            line = [m, "n/a"] + ["n/a"] * len(dsets)
            table.append(line)
            continue
        line = [m] + ([kinds.get(m) or ""] if spec.needs_likelihood else [])
        for ds, stats, failed, best in body:
            if m in stats:
                mean, std, n = stats[m]
                text = f"{spec.fmt.format(mean)} ± {spec.fmt.format(std)}" if n > 1 else spec.fmt.format(mean)
                line.append(f"**{text}**" if m == best else text)
            elif m in failed:
                note = footnotes.setdefault(failed[m], len(footnotes) + 1)
                line.append(f"failed [{note}]")
            else:
                line.append("–")
        table.append(line)
    return f"### {spec.title}\n\n" + tabulate(table, headers=header, tablefmt="github", disable_numparse=True)


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any] | None = None, figures: list[str] | None = None) -> str:
    """The whole Markdown report for ``rows``."""
    meta = meta or {}
    if not rows:
        return "# densitybench report\n\nNo results yet.\n"
    df = rows_frame(rows)
    cfg = meta.get("config", {})
    methods_order = _order(sorted(df.method.unique()), list(cfg.get("methods") or []) if isinstance(cfg.get("methods"), list) else [])
    dsets = _order(sorted(df.dataset.unique()), _dataset_order(cfg))
    kinds = {}
    for m in methods_order:
        k = df[(df.method == m) & (df.status == "ok")].get("metrics.kind")
        kinds[m] = next((v for v in (k if k is not None else []) if isinstance(v, str)), None)
    seeds = sorted(df.seed.unique())
    n_ok, n_failed = int((df.status == "ok").sum()), int((df.status == "failed").sum())
    lines = ["# densitybench report", ""]
    env = meta.get("environment", {})
    lines.append(f"Profile `{', '.join(sorted(df.profile.unique()))}`, {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), "
                 f"device `{env.get('device', '?')}`, code `{env.get('code_version', '?')}`. "
                 f"{n_ok} cell(s) ok, {n_failed} failed. Entries are mean ± std over seeds; "
                 "the best entry per dataset is in bold. Likelihood kinds: exact, bound (a lower bound), "
                 "estimate; n/a where a method has no likelihood.")
    lines.append("")
    footnotes: dict[str, int] = {}
    for spec in TABLES:
        t = metric_table(df, spec, methods_order, dsets, kinds, footnotes)
        if t:
            lines += [t, ""]
    phases = [c for c in df.columns if c.startswith("timings.phase.")]
    if phases:
        lines += ["### Fit phases (s, mean over seeds and datasets)", ""]
        ph = df[df.status == "ok"].groupby("method")[phases].mean()
        ph.columns = [c.removeprefix("timings.phase.") for c in ph.columns]
        ph = ph.reindex([m for m in methods_order if m in ph.index])
        lines += [tabulate(ph.reset_index().fillna("–").values.tolist(), headers=["method", *ph.columns],
                           tablefmt="github", floatfmt=".2f"), ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures] + [""]
    if footnotes:
        lines += ["## Failed cells", ""]
        lines += [f"[{n}] {err}" for err, n in sorted(footnotes.items(), key=lambda kv: kv[1])] + [""]
        failed = df[df.status == "failed"]
        lines += [tabulate(failed[["method", "dataset", "seed", "error"]].values.tolist(),
                           headers=["method", "dataset", "seed", "error"], tablefmt="github"), ""]
    return "\n".join(lines)


def _dataset_order(cfg: dict[str, Any]) -> list[str]:
    from harness.config import TOY_2D

    d = cfg.get("datasets")
    return TOY_2D if d in ("2d", None) else list(d) if isinstance(d, list) else []


def write_report(run_dir: Path | str, formats: tuple[str, ...] = ("md", "csv")) -> list[Path]:
    """Regenerate the report files of ``run_dir`` from its store alone; returns the paths."""
    run_dir = Path(run_dir)
    store = ResultsStore(run_dir, create=False)
    try:
        rows, meta = store.rows(), store.meta()
    finally:
        store.close()
    written = []
    if "csv" in formats:
        path = run_dir / "results.csv"
        rows_frame(rows).to_csv(path, index=False)
        written.append(path)
    if "md" in formats:
        path = run_dir / "report.md"
        path.write_text(markdown(rows, meta))
        written.append(path)
    return written
