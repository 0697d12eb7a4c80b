"""Command line: ``python -m harness {run,tune,report,merge,list,data}``.

Exit status: 0 done; 2 bad input (one line on stderr; ``--debug`` shows the traceback), including
input that exhausts memory or recursion or cannot be decoded; 3 (``run``) some cell of the grid
failed, unless ``--allow-failures``; 130 interrupted (Ctrl-C, SIGTERM or SIGHUP, wherever it arrives:
finished cells are kept, a report of them is written, and the same command resumes; see
harness/signals.py); 141 stdout was closed (``| head``).
"""

from __future__ import annotations

import argparse
import codecs
import os
import sys
from pathlib import Path

from harness import PROJECT_ROOT, check_datasets_package, set_process_defaults
from harness.errors import UserError
from harness.signals import deferred_interrupts, interrupt_on_signals

set_process_defaults()  # before anything imports torch


#: ``harness run`` exit status when a cell of the grid has a failed row (without --allow-failures).
EXIT_FAILED_CELLS = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
#: Files ``report`` writes in a run directory (each must be a regular file when it exists).
REPORT_FILES = ("results.csv", "report.md", "report.html", "report.tex")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _grid_arguments(p: argparse.ArgumentParser) -> None:
    """The options that define a grid, shared by ``run`` and ``tune``."""
    p.add_argument("--config", metavar="FILE.toml", help="TOML config file (see harness/config.py)")
    p.add_argument("--methods", help="comma list of methods, or 'all' (default: every available method)")
    p.add_argument(
        "--datasets",
        help="comma list of datasets, a group ('2d': the eight 2-D sets; `list` shows the "
        "groups) or 'all'; file:PATH for your own table (default: 8gaussians,checkerboard,circles)",
    )
    p.add_argument("--seeds", help="N for seeds 0..N-1 (default 3), or a comma list such as 0,3,7")
    p.add_argument("--profile", help="smoke | quick | paper (default quick)")
    p.add_argument("--device", help="auto | cpu | cuda (default auto)")
    p.add_argument(
        "--out", metavar="DIR", help="run directory (default reports/<config name or 'default'>); reusing it resumes"
    )
    p.add_argument("--data-root", help="data root (default $DENSITYBENCH_DATA or ~/.cache/densitybench)")
    p.add_argument("--time-limit", type=float, help="seconds per cell before it is recorded as failed")
    p.add_argument("--sample-size", type=int, help="samples per cell for the sample-quality metrics (default 5000)")
    p.add_argument("--executor", help="local (default) | ray")
    p.add_argument("--address", help="Ray cluster address (with --executor ray)")
    p.add_argument(
        "--jobs",
        help="cells run at a time by the local executor: 'auto' (default: one per CPU core up to 8, one on a GPU) or N",
    )
    p.add_argument(
        "--budget",
        metavar="SECONDS",
        help="the same wall-clock training budget for every trainable "
        "method: each training loop stops at its first checkpoint past it (see README)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m harness", description="densitybench: benchmark generative models as density estimators."
    )
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a benchmark grid and write its report")
    _grid_arguments(run)
    run.add_argument(
        "--params-from",
        metavar="RUN_DIR",
        help="run the parameters the tuning studies of RUN_DIR chose for each method and dataset (see tune)",
    )
    run.add_argument(
        "--shard",
        metavar="I/N",
        help="run only shard I (0..N-1) of the grid cut into N, each into its own --out; "
        "`merge` combines them (see docs/cluster.md)",
    )
    run.add_argument("--retry-failed", action="store_true", help="rerun cells recorded as failed")
    run.add_argument(
        "--allow-failures",
        action="store_true",
        help=f"exit 0 even when cells failed (default: exit {EXIT_FAILED_CELLS})",
    )

    tune = sub.add_parser(
        "tune",
        help="tune every method with the same budget on validation data, then run the chosen parameters on test",
    )
    _grid_arguments(tune)
    budget = tune.add_mutually_exclusive_group(required=True)
    budget.add_argument("--trials", type=int, help="trials per (method, dataset) study, the same for every method")
    budget.add_argument(
        "--tune-budget", type=float, metavar="SECONDS", help="fit seconds per (method, dataset) study instead"
    )
    tune.add_argument("--pruner", default="median", help="median (default) | halving | none")
    tune.add_argument(
        "--trials-per-round",
        type=int,
        help="trials proposed together per study (default 4); the same command gives the same trials",
    )
    tune.add_argument("--no-test", action="store_true", help="tune only: leave out the test cells of the choices")
    tune.add_argument(
        "--allow-failures",
        action="store_true",
        help=f"exit 0 even when test cells failed (default: exit {EXIT_FAILED_CELLS})",
    )

    rep = sub.add_parser("report", help="regenerate a run directory's report from its results database")
    rep.add_argument("run_dir")
    rep.add_argument("--format", default="md,csv,html", help="comma list of md, html, latex, csv (default md,csv,html)")
    rep.add_argument("--quality-metric", default="energy_distance", help="sample-quality metric of the verdict")
    rep.add_argument(
        "--salvage",
        action="store_true",
        help="move a damaged results database aside and keep its "
        "readable rows in a new one (then `run` recomputes the rest)",
    )

    mrg = sub.add_parser(
        "merge",
        help="combine run directories (e.g. the shards of a grid) into a new one and write its report",
    )
    mrg.add_argument("out", metavar="OUT", help="the new run directory (must not exist, or be empty)")
    mrg.add_argument("inputs", metavar="DIR", nargs="+", help="run directories to combine (only read)")
    mrg.add_argument(
        "--prefer",
        choices=("first", "last", "newest"),
        help="which copy wins when a cell is in several inputs with a different config hash or code "
        "version: the first or last listed, or the newest (default: refuse)",
    )
    mrg.add_argument("--format", default="md,csv,html", help="comma list of md, html, latex, csv (default md,csv,html)")

    lst = sub.add_parser("list", help="list methods, datasets and profiles")
    lst.add_argument(
        "--methods",
        help="show the method variants this spec expands to, e.g. "
        "'supervised_diffusion[teacher=training_free,score_model]', with their parameters",
    )
    lst.add_argument("--profile", help="profile whose parameters --methods shows (default quick)")

    data = sub.add_parser("data", help="manage the data root")
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    fetch = dsub.add_parser("fetch", help="download a dataset group's files into the data root")
    fetch.add_argument(
        "bundle", metavar="GROUP", help="dataset group to download (maf or uci; `list` shows each dataset's group)"
    )
    fetch.add_argument("--data-root", help="data root (default $DENSITYBENCH_DATA or ~/.cache/densitybench)")
    return p


def _grid_config(args: argparse.Namespace):
    """The Config of ``run``'s and ``tune``'s grid options, checked (data root, device, executor)."""
    from harness import config as config_mod

    overrides = {
        "methods": args.methods,
        "datasets": args.datasets,
        "seeds": args.seeds,
        "profile": args.profile,
        "device": args.device,
        "data_root": args.data_root,
        "time_limit": args.time_limit,
        "sample_size": args.sample_size,
        "executor": args.executor,
        "address": args.address,
        "jobs": args.jobs,
        "budget": args.budget,
        "params_from": getattr(args, "params_from", None),
        "shard": getattr(args, "shard", None),
    }
    cfg = config_mod.build(args.config, overrides)
    if cfg.data_root is not None and not Path(cfg.data_root).expanduser().is_dir():
        raise UserError(f"data root {cfg.data_root} does not exist or is not a directory")
    if cfg.device == "cuda":
        from harness.gpu import cuda_device_count  # asks a child process: no CUDA context here

        if cuda_device_count() == 0:
            raise UserError("--device cuda was requested but no CUDA GPU is available (use --device auto or cpu)")
    if cfg.executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise UserError("--executor ray needs Ray: pip install -e '.[distributed]'")
        if cfg.address:  # a wrong address fails now, before the run directory is made
            from harness.ray_executor import check_reachable

            check_reachable(cfg.address)
    return cfg, config_mod.run_directory(cfg, args.out, PROJECT_ROOT / "reports")


def cmd_run(args: argparse.Namespace) -> int:
    cfg, run_dir = _grid_config(args)
    if cfg.params_from is not None and not Path(cfg.params_from).is_dir():
        raise UserError(f"--params-from {cfg.params_from}: no such run directory")
    return _run_and_report(cfg, run_dir, args)


def _run_and_report(cfg, run_dir: Path, args: argparse.Namespace) -> int:
    """Run ``cfg``'s grid into ``run_dir``, write the report, print the outcome; the exit status."""
    from harness.report import print_verdict
    from harness.runner import run_grid

    summary = run_grid(cfg, run_dir, progress=not args.no_progress, retry_failed=getattr(args, "retry_failed", False))
    for m, why in summary.method_skips.items():
        print(f"skipped method {m}: {why}", file=sys.stderr)
    paths, deferred = write_report_safely(run_dir)
    print_verdict(run_dir)
    state = "interrupted" if summary.interrupted or deferred.signal is not None else "done"
    share = f" (shard {cfg.shard} of a {summary.grid_cells}-cell grid)" if cfg.shard else ""
    print(
        f"{state}: {summary.ok} ok, {summary.failed} failed, {summary.skipped_done} already done "
        f"of {summary.total} cells{share} in {summary.seconds:.0f} s; report: {paths[-1] if paths else run_dir}"
    )
    if state == "interrupted":
        return EXIT_INTERRUPTED
    if summary.failed_in_grid and not args.allow_failures:
        print(
            f"{summary.failed_in_grid} of {summary.total} cells failed (exit {EXIT_FAILED_CELLS}; "
            "--allow-failures exits 0)",
            file=sys.stderr,
        )
        return EXIT_FAILED_CELLS
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune every method of the grid on validation data, then run the chosen parameters' test cells."""
    from dataclasses import replace

    from harness.tuning import ROUND_SIZE, TuneSettings, tune

    cfg, run_dir = _grid_config(args)
    settings = TuneSettings(
        trials=args.trials,
        budget_s=args.tune_budget,
        pruner=args.pruner,
        round_size=ROUND_SIZE if args.trials_per_round is None else args.trials_per_round,
    )
    summary = tune(cfg, settings, run_dir, progress=not args.no_progress)
    for row, why in summary.untuned.items():
        print(f"not tuned: {row}: {why}", file=sys.stderr)
    print(
        f"{'interrupted' if summary.interrupted else 'tuned'}: {summary.studies} studies, {summary.trials_run} trials "
        f"run now ({summary.ok} ok, {summary.pruned} pruned, {summary.failed} failed) in {summary.seconds:.0f} s; "
        f"studies: {run_dir / 'tuning.sqlite'}"
    )
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if args.no_test:
        write_report_safely(run_dir)
        return 0
    return _run_and_report(replace(cfg, params_from=str(run_dir)), run_dir, args)


def write_report_safely(run_dir: Path | str, formats: tuple[str, ...] | None = None, **options):
    """Write the report as a critical section (an interrupt signal waits until it is complete): the
    report files must be regular files, and an export holding more rows than the database is moved
    aside first. ``options`` go to ``write_report``. Returns (paths written, the ``Deferred`` signal
    state)."""
    from harness.report import write_report
    from harness.store import ARTIFACT_DIR, ResultsStore, protect_export
    from harness.toolkit.files import regular_file

    with deferred_interrupts("writing the report") as deferred:
        store = ResultsStore(run_dir, create=False)  # a database that is not ours is refused here
        try:
            rows = len(store.rows())
        finally:
            store.close()
        for name in REPORT_FILES:
            if os.path.lexists(Path(run_dir) / name):
                regular_file(Path(run_dir) / name, "report file")
        for folder, what in ((ARTIFACT_DIR, "artefact"), ("figures", "figure")):  # a FIFO would block its reader
            for entry in sorted(Path(run_dir, folder).glob("*")) if Path(run_dir, folder).is_dir() else []:
                regular_file(entry, what)
        if formats is None or "csv" in formats:
            protect_export(run_dir, rows)
        paths = write_report(run_dir, **({} if formats is None else {"formats": formats}), **options)
    return paths, deferred


def cmd_report(args: argparse.Namespace) -> int:
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    valid = ("md", "html", "latex", "csv")
    if not formats:
        raise UserError(f"--format names no format; valid: {', '.join(valid)} (comma-separated)")
    for f in formats:
        if f not in valid:
            raise UserError(f"unknown report format '{f}'; valid: {', '.join(valid)}")
    if not args.run_dir.strip():
        raise UserError("the run directory is empty; give the folder a run wrote")
    if args.salvage:
        from harness.store import salvage

        with deferred_interrupts("salvaging the database") as deferred:
            kept, aside = salvage(args.run_dir)
        print(f"kept {kept} readable rows in a new database; the damaged one is now {aside}", file=sys.stderr)
        if deferred.signal is not None:
            return EXIT_INTERRUPTED
    warn_changed_data(args.run_dir)
    paths, deferred = write_report_safely(args.run_dir, formats, quality_metric=args.quality_metric)
    for path in paths:
        print(path)
    return EXIT_INTERRUPTED if deferred.signal is not None else 0


def warn_changed_data(run_dir: str) -> None:
    """A warning for each ``file:`` dataset whose content changed since the run (its figures then show
    the current content beside the recorded rows)."""
    from harness.runner import FINGERPRINTS, changed_data, data_fingerprints
    from harness.store import ResultsStore, warn

    store = ResultsStore(run_dir, create=False)
    try:
        recorded = store.meta().get(FINGERPRINTS, {})
    finally:
        store.close()
    for name in recorded:
        try:
            now = data_fingerprints([name])
        except UserError:  # the file is gone: its figure panels stay blank
            continue
        for changed in changed_data(recorded, now):
            warn(f"{changed} has changed since its rows were computed; figures show its current content")


def cmd_merge(args: argparse.Namespace) -> int:
    from harness.merge import merge_runs
    from harness.report.writer import check_formats

    formats = check_formats(args.format)
    with deferred_interrupts("merging the run directories") as deferred:
        summary = merge_runs(args.out, args.inputs, prefer=args.prefer)
    if deferred.signal is not None:
        return EXIT_INTERRUPTED
    paths, deferred = write_report_safely(args.out, formats)
    if deferred.signal is not None:
        return EXIT_INTERRUPTED
    dupes = f"; {summary.agreed} duplicate(s) agreed" if summary.agreed else ""
    if summary.preferred:
        dupes += f", {summary.preferred} differing cell(s) decided by --prefer {args.prefer}"
    print(
        f"merged {summary.rows} cells ({summary.failed} failed) from {summary.sources} run directories"
        f"{dupes}; report: {paths[-1] if paths else args.out}"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    import datasets
    import methods
    from harness import config as config_mod

    if args.profile is not None:
        config_mod.validate({"profile": args.profile})  # an unknown profile names the valid ones
    if args.methods is not None:
        if not args.methods.strip():
            raise UserError("list --methods is empty; give a method spec, e.g. 'gan[lr=1e-3,1e-4]'")
        return list_variants(args.methods, args.profile or "quick")
    if args.profile is not None:
        raise UserError("list --profile shows a profile's parameters of --methods SPEC; give --methods too")

    unavailable = methods.unavailable()
    rows = []
    for name in methods.names():
        cls = methods.get(name)
        rows.append(
            [
                name,
                cls.log_prob_kind or "none",
                ", ".join(cls.profiles),
                ", ".join(cls.search_space) or "–",
                "yes" if name not in unavailable else f"no: {unavailable[name]}",
            ]
        )
    for name, why in unavailable.items():
        if name not in methods.names():
            rows.append([name, "?", "", "", f"no: {why}"])
    headers = ["method", "likelihood", "profiles", "search space (tune)", "available"]
    print("Methods\n" + tabulate(rows, headers=headers, tablefmt="simple"))
    drows = []
    for name in datasets.names():
        ds = datasets.get(name)
        ok, why = ds.available()
        sizes = ds.sizes()
        drows.append(
            [
                name,
                ds.group or "–",
                getattr(ds, "dim", "?"),
                "/".join(f"{s:,}" for s in sizes) if sizes else "?",
                "yes" if ds.has_density else "no",
                "yes" if ok else f"no: {why}",
            ]
        )
    print(
        "\nDatasets (--datasets GROUP runs a group's datasets)\n"
        + tabulate(
            drows, headers=["dataset", "group", "dim", "train/val/test", "true density", "available"], tablefmt="simple"
        )
    )
    print("\nProfiles: smoke (seconds, for tests), quick (minutes, CPU; the default), paper (the published settings)")
    print(
        "Method variants: --methods 'name[param=value,...]' runs a method with other parameters as its own row; "
        "a list of values expands into one variant each (list --methods SPEC shows them)"
    )
    return 0


def list_variants(spec: str, profile: str) -> int:
    """One line per method variant of ``spec``: its row name, base method, likelihood kind and parameters."""
    from tabulate import tabulate

    import methods
    from harness import config as config_mod

    cfg = config_mod.validate({"methods": spec, "profile": profile, "datasets": ["8gaussians"]})
    variants, _, skipped = config_mod.resolve_names(cfg)
    rows = []
    for v in variants:
        params = methods.profile_params(v.base, profile)
        shown = ", ".join(f"{k}={params[k]!r} -> {val!r}" for k, val in v.params) or "(profile defaults)"
        kind = methods.get(v.base).log_prob_kind or "none"
        rows.append([v.name, v.base, kind, shown if v.name not in skipped else f"unavailable: {skipped[v.name]}"])
    print(tabulate(rows, headers=["row name", "method", "likelihood", f"parameters ({profile})"], tablefmt="simple"))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from datasets.base import resolve_root
    from harness.download import fetch

    if args.data_root is not None and not args.data_root.strip():
        raise UserError("--data-root is empty; give a folder")
    root = resolve_root(args.data_root)
    for path in fetch(args.bundle, root):
        print(path)
    return 0


def _console_errors(error: UnicodeError) -> tuple[bytes, int]:
    """Encoding errors on the console: undecodable bytes of file names (surrogates) go out as they came
    in, other characters the console's encoding lacks as backslash escapes (never a traceback)."""
    text = error.object[error.start : error.end]
    out = b"".join(
        bytes([ord(c) - 0xDC00]) if "\udc80" <= c <= "\udcff" else c.encode("ascii", "backslashreplace") for c in text
    )
    return out, error.end


codecs.register_error("densitybench.console", _console_errors)


def _say(message: str) -> None:
    """One line on stderr, even when the terminal is gone."""
    try:
        print(message, file=sys.stderr)
    except (OSError, ValueError):
        pass


#: What a resource error while reading input means, in one line.
RESOURCE_ERRORS = {
    MemoryError: "ran out of memory reading the input (a file or value far larger than it should be?)",
    RecursionError: "the input is nested too deeply (hundreds of levels of brackets in a config, variant or file)",
}


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="densitybench.console")
        except (AttributeError, ValueError):  # not a text stream (captured by a test, say)
            pass
    with interrupt_on_signals():  # the one signal policy, from the first line on (harness/signals.py)
        try:
            return _main(argv)
        except KeyboardInterrupt:
            _say("interrupted")
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # stdout closed early (| head): stop quietly
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_datasets_package()
    handlers = {
        "run": cmd_run,
        "tune": cmd_tune,
        "report": cmd_report,
        "merge": cmd_merge,
        "list": cmd_list,
        "data": cmd_data,
    }
    try:
        return handlers[args.command](args)
    except UserError as e:
        if args.debug:
            raise
        _say(f"error: {e}")
        return 2
    except BrokenPipeError:
        raise
    except OSError as e:  # a storage fault outside the results database (report files, figures)
        if args.debug:
            raise
        _say(f"error: {e}")
        return 2
    except (MemoryError, RecursionError) as e:
        if args.debug:
            raise
        _say(f"error: {RESOURCE_ERRORS[type(e)]}")
        return 2
    except UnicodeError as e:  # a name the locale cannot encode, or bytes that are not text
        if args.debug:
            raise
        _say(f"error: text that cannot be encoded or decoded ({e}); use UTF-8 names and a UTF-8 locale")
        return 2


if __name__ == "__main__":
    sys.exit(main())
