"""The GPU check's speed ratios and its one-page summary (called by scripts/gpu_check.sh).

``ratios``: sampling throughput of ``supervised_diffusion`` over ``training_free_ode``
(the paper's sampling settings, :mod:`bench_sampling_flagship`) and over
``score_diffusion`` and ``maf`` (paper networks and sampler settings,
:func:`bench_methods.speed_ratios`) at d = 2 and d = 43, and the score kernel's
GFLOP/s over a same-precision matmul's (:func:`bench_score.kernel_ratios`), all
timed on one device with it synchronised. ``--tiny`` shrinks every size (d = 2
only, smoke networks) so the CPU dry run of the script finishes in seconds.

``summary``: GPU, torch, the precision policy, cells ok out of total (and every
failed cell), the ratios and the peak device memory of a run directory, as
Markdown; exits 1 when a cell is not ok or the grid is incomplete.

    python benchmarks/gpu_check.py ratios --device cuda --out ratios.json
    python benchmarks/gpu_check.py summary RUN_DIR --ratios ratios.json --expect 35 --out summary.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `python benchmarks/gpu_check.py` from a checkout
    sys.path.insert(0, str(ROOT))

#: Sizes of the --tiny dry run (CPU, seconds).
TINY = {
    "dims": (2,),
    "profile": "smoke",
    "rounds": 1,
    "generator": 2_000,
    "teacher": 20,
    "samples": {"supervised_diffusion": 2_000, "score_diffusion": 50, "maf": 500},
    "rows": 2_000,
    "queries": 400,
    "fit_steps": {"score_diffusion": {"steps": 20}, "maf": {"steps": 10, "eval_every": 5}},
}


def environment(device: str) -> dict[str, Any]:
    """torch, CUDA and the GPU of this process (a measuring process, not the harness)."""
    import torch

    from harness.gpu import apply_precision_policy, device_info

    return {"torch": torch.__version__, "device": device, **device_info(device), **apply_precision_policy()}


def ratios(device: str, tiny: bool = False) -> dict[str, Any]:
    """Every ratio of the check, keyed ``over_<method>_d<d>`` and ``kernel_<...>_d<d>``, with throughputs."""
    from benchmarks import bench_methods, bench_sampling_flagship, bench_score

    out: dict[str, Any] = {"environment": environment(device), "tiny": tiny}
    dims, profile, rounds, samples = (bench_sampling_flagship.DIMS, "paper", 2, None)
    if tiny:
        dims, profile, rounds, samples = TINY["dims"], TINY["profile"], TINY["rounds"], TINY["samples"]
        bench_sampling_flagship.N_GENERATOR, bench_sampling_flagship.N_TEACHER = TINY["generator"], TINY["teacher"]
        bench_score.N_ROWS, bench_score.N_QUERIES = TINY["rows"], TINY["queries"]
        for name, fit in TINY["fit_steps"].items():
            bench_methods.CHEAP_FIT[name] = {**bench_methods.CHEAP_FIT[name], **fit}
    t0 = time.perf_counter()
    for d in dims:
        flagship = bench_sampling_flagship.measure(d, device, rounds)
        out[f"over_training_free_ode_d{d}"] = flagship["speedup"]
        others = bench_methods.speed_ratios(profile, d, rounds, device=device, samples=samples)
        out[f"over_score_diffusion_d{d}"] = others["over_score_diffusion"]
        out[f"over_maf_d{d}"] = others["over_maf"]
        kernel = bench_score.kernel_ratios(d, rounds=max(rounds, 3), device=device)
        out[f"kernel_fraction_of_matmul_d{d}"] = kernel["fraction_of_matmul"]
        out[f"kernel_fraction_of_peak_matmul_d{d}"] = kernel["fraction_of_peak_matmul"]
        out[f"throughput_d{d}"] = {
            "generator_per_s": flagship["generator"],
            "teacher_per_s": flagship["teacher"],
            **{k: v for k, v in others.items() if k.endswith("_per_s")},
            "score_diffusion_nfe": others["score_diffusion_nfe"],
            "kernel_gflops": kernel["gflops_kernel"],
            "matmul_gflops": kernel["gflops_matmul"],
        }
    out["seconds"] = time.perf_counter() - t0
    return out


def _fmt(x: Any) -> str:
    return f"{x:,.3g}" if isinstance(x, float) else str(x)


def summary(run_dir: Path, ratio_file: Path | None, expect: int | None, tests_file: Path | None) -> tuple[str, bool]:
    """The Markdown summary and whether the check passed (every expected cell ok)."""
    from harness.store import ResultsStore

    store = ResultsStore(run_dir, create=False)
    rows, env = store.rows(), store.meta().get("environment", {})
    store.close()
    ok = [r for r in rows if r["status"] == "ok"]
    bad = [r for r in rows if r["status"] != "ok"]
    total = max(len(rows), expect or 0)
    passed = not bad and (expect is None or len(ok) == expect)
    rat = json.loads(ratio_file.read_text(encoding="utf-8")) if ratio_file is not None and ratio_file.exists() else {}
    renv = rat.get("environment", {})
    lines = [
        f"# GPU check: {'PASSED' if passed else 'FAILED'}",
        "",
        f"- GPU: {env.get('gpu') or renv.get('gpu') or 'none'} ({env.get('gpu_memory_gib', renv.get('gpu_memory_gib', '?'))} GiB); "
        f"device {env.get('device', '?')}; torch {env.get('torch', renv.get('torch', '?'))}, CUDA {renv.get('cuda_version', env.get('cuda_version', '?'))}",
        f"- float32 matmul precision: {env.get('float32_matmul_precision', '?')}; sample metrics on {env.get('sample_metrics_device', '?')}",
        f"- cells ok: **{len(ok)} / {total}**"
        + ("" if expect is None or len(rows) == expect else f" ({len(rows)} rows, {expect} expected)"),
    ]
    if tests_file is not None and tests_file.exists():
        tail = [line for line in tests_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        lines.append(f"- GPU tests: {tail[-1].strip('= ') if tail else 'no output'}")
    for r in bad:
        lines.append(f"  - FAILED {r['method']}/{r['dataset']}/s{r['seed']} ({r['profile']}): {r['error']}")
    peaks = [(r["timings"].get("peak_cuda_mib"), r) for r in ok if r["timings"].get("peak_cuda_mib") is not None]
    if peaks:
        top, row = max(peaks, key=lambda p: p[0])
        lines.append(
            f"- peak CUDA memory: {top:,.0f} MiB allocated, max over cells ({row['method']}/{row['dataset']}, {row['profile']})"
        )
    if rat:
        lines += [
            "",
            "| sampling speed ratio of supervised_diffusion | "
            + " | ".join(f"d = {k.rsplit('_d', 1)[1]}" for k in rat if k.startswith("over_training_free_ode_d"))
            + " |",
            "|---|" + "---|" * sum(k.startswith("over_training_free_ode_d") for k in rat),
        ]
        for name in ("training_free_ode", "score_diffusion", "maf"):
            keys = [k for k in rat if k.startswith(f"over_{name}_d")]
            lines.append(f"| over {name} | " + " | ".join(f"{_fmt(rat[k])}x" for k in keys) + " |")
        for name in ("fraction_of_matmul", "fraction_of_peak_matmul"):
            keys = [k for k in rat if k.startswith(f"kernel_{name}_d")]
            lines.append(
                f"| score kernel GFLOP/s, {name.replace('_', ' ')} | " + " | ".join(_fmt(rat[k]) for k in keys) + " |"
            )
        lines += [
            "",
            f"Ratios measured in one process in {rat.get('seconds', 0):.0f} s"
            + (" (tiny CPU dry run: not a measurement)" if rat.get("tiny") else "")
            + ".",
        ]
    if rows:
        per = {}
        for r in ok:
            key = (r["method"], r["profile"])
            per.setdefault(key, []).append(r["timings"].get("fit_s", 0.0))
        lines += ["", "| method | profile | cells ok | mean fit s |", "|---|---|---|---|"]
        lines += [f"| {m} | {p} | {len(v)} | {sum(v) / len(v):.1f} |" for (m, p), v in sorted(per.items())]
    return "\n".join(lines) + "\n", passed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("ratios")
    r.add_argument("--device", default="cuda")
    r.add_argument("--tiny", action="store_true")
    r.add_argument("--out", required=True)
    s = sub.add_parser("summary")
    s.add_argument("run_dir")
    s.add_argument("--ratios")
    s.add_argument("--tests")
    s.add_argument("--expect", type=int)
    s.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.command == "ratios":
        result = ratios(args.device, args.tiny)
        Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
        print(json.dumps({k: v for k, v in result.items() if k.startswith(("over_", "kernel_"))}, indent=1))
        return 0
    text, passed = summary(
        Path(args.run_dir),
        Path(args.ratios) if args.ratios else None,
        args.expect,
        Path(args.tests) if args.tests else None,
    )
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
