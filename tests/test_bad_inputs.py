"""The bad-input corpus: every known bad command line, config, data file, damaged or foreign run
directory and hostile file, as data, with the exit status and a fragment of the one-line message it
must give. The cases are grouped by class (``CLASSES``), and each names the mechanism that handles
it: the one place that reads a file, decodes a row or checks an option.

Each case runs ``harness.__main__.main(argv)`` in this process (the path ``python -m harness`` takes
after start-up), except those marked ``subprocess`` (a file that would block or exhaust a reader on
a regression, a locale): they run as real processes with a timeout and a memory limit, and
``test_corpus_through_the_real_entry_point`` runs a sample of the others that way too. Cases that
exit 2 must do so before any cell runs: their default output directory must not exist afterwards,
and the files a case lists as ``unchanged`` must be byte-identical afterwards.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from harness.__main__ import main
from harness.store import ResultsStore

#: Every ``run`` case gets these unless it names the option itself (fast: one method, smoke profile).
RUN_DEFAULTS = {
    "--methods": "gaussian",
    "--datasets": "8gaussians",
    "--profile": "smoke",
    "--out": "{tmp}/out",
    "--no-progress": None,
}
#: Address-space limit of a subprocess case (bytes): a smoke run needs well under it; a reader that
#: loads a hostile file whole does not.
SUBPROCESS_MEMORY = 3 << 30
#: Seconds a subprocess case may take (a reader blocked on a FIFO never ends).
SUBPROCESS_TIMEOUT = 120
#: The environment of a C locale without Python's UTF-8 mode (ASCII files and streams).
C_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}


def table_text(rows: int = 20, cols: int = 3) -> str:
    rng = np.random.default_rng(0)
    return "\n".join(",".join(f"{v:.4f}" for v in rng.standard_normal(cols)) for _ in range(rows)) + "\n"


def table(rows: int = 200, cols: int = 3, **columns: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """A CSV of ``rows`` standard normal rows whose column ``c<j>`` (1-based) is replaced by
    ``columns[f"c{j}"](column)``; a .npy file when the path ends so."""

    def write(path: Path) -> None:
        x = np.random.default_rng(0).standard_normal((rows, cols))
        for name, fn in columns.items():
            j = int(name[1:]) - 1
            x[:, j] = fn(x[:, j])
        if path.suffix == ".npy":
            np.save(path, x)
        else:
            np.savetxt(path, x, delimiter=",", fmt="%.17g")

    return write


def not_utf8_at(byte: int) -> bytes:
    """A valid CSV whose byte ``byte`` (1-based, on a data line far past the start) is not UTF-8."""
    data = bytearray(table_text(rows=400).encode())
    data[byte - 1] = 0xFF
    return bytes(data)


def damaged_database(run_dir: Path, rows: int = 60) -> None:
    """A results database of ``rows`` rows (about 35 pages) whose 11th page is overwritten."""
    store = ResultsStore(run_dir)
    for i in range(rows):
        store.put(
            {
                "cell_key": f"k{i:03d}",
                "method": "gaussian",
                "dataset": "8gaussians",
                "seed": i,
                "profile": "smoke",
                "params": {},
                "device": "cpu",
                "status": "failed",
                "error": "x",
                "metrics": {},
                "timings": {},
                "info": {"pad": "x" * 1500},
            }
        )
    store.close()
    with open(run_dir / "results.sqlite", "r+b") as f:
        f.seek(4096 * 10)
        f.write(b"\xff" * 4096)


def healthy_database(run_dir: Path) -> None:
    ResultsStore(run_dir).close()


def rows_database(run_dir: Path, rows: int = 3) -> None:
    """A healthy results database of ``rows`` ok rows ``k000``, ``k001``, ... (gaussian on 8gaussians)."""
    store = ResultsStore(run_dir)
    for i in range(rows):
        store.put(
            {
                "cell_key": f"k{i:03d}",
                "method": "gaussian",
                "dataset": "8gaussians",
                "seed": i,
                "profile": "smoke",
                "params": {},
                "device": "cpu",
                "status": "ok",
                "error": None,
                "metrics": {"kind": "exact", "test_loglik": -2.5 + 0.1 * i, "test_loglik_se": 0.05},
                "timings": {"fit_s": 0.1},
                "info": {},
            }
        )
    store.close()


def sql(statement: str, *params, rows: int = 3) -> Callable[[Path], None]:
    """A run directory of ``rows_database`` on which ``statement`` (with ``params``) was then run."""

    def make(run_dir: Path) -> None:
        rows_database(run_dir, rows)
        with sqlite3.connect(run_dir / "results.sqlite") as conn:
            conn.execute(statement, params)
        conn.close()

    return make


def damaged_row(column: str, text: str, key: str = "k001") -> Callable[[Path], None]:
    """A run directory whose row ``key`` holds ``text`` in ``column`` (as stored, no encoding)."""
    return sql(f"UPDATE results SET {column} = ? WHERE cell_key = ?", text, key)


def damaged_meta(key: str, text: str) -> Callable[[Path], None]:
    return sql("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", key, text)


def foreign_database(path: Path) -> None:
    """Another program's SQLite file (no table of ours), in rollback-journal mode."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (name TEXT, age INTEGER)")
        conn.execute("INSERT INTO people VALUES ('ada', 36)")
    conn.close()


def results_without_our_columns(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE results (cell_key TEXT, score REAL)")
    conn.close()


def fifo(path: Path) -> None:
    os.mkfifo(path)


def directory(path: Path) -> None:
    path.mkdir()


def npy_claiming(shape: tuple[int, ...]) -> Callable[[Path], None]:
    """A .npy file whose header claims ``shape`` (float64) followed by 96 bytes of data."""

    def write(path: Path) -> None:
        import numpy.lib.format as npy_format

        with path.open("wb") as f:
            npy_format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
            f.write(bytes(96))

    return write


def npz_named_npy(path: Path) -> None:
    with path.open("wb") as f:
        np.savez(f, x=np.ones((20, 3)))


def sparse_nul(size: int) -> Callable[[Path], None]:
    """A file of ``size`` NUL bytes that takes no disk space (a sparse file)."""

    def write(path: Path) -> None:
        with path.open("wb") as f:
            f.truncate(size)

    return write


def fingerprinted_run(data: str, sha: str = "0" * 64) -> Callable[[Path], None]:
    """A run directory whose meta records ``sha`` as the content hash of ``file:<its parent>/<data>``."""

    def make(run_dir: Path) -> None:
        store = ResultsStore(run_dir)
        store.set_meta("data_fingerprints", {f"file:{run_dir.parent / data}": sha})
        store.close()

    return make


def export_of(rows: int) -> str:
    """A results.csv export of ``rows`` rows."""
    return "method,dataset,seed,status\n" + "".join(f"gaussian,8gaussians,{i},ok\n" for i in range(rows))


@dataclass(frozen=True)
class Case:
    """``argv`` ("{tmp}" is the case's folder) -> exit ``code`` and ``fragment`` in the one line on
    stderr (``fragment`` None: stderr stays empty), handled by ``mechanism``.

    ``files``: name -> text, bytes, or a function of the path that makes it (a run directory).
    ``unchanged``: files that must be byte-identical afterwards; ``kept_as``: file -> where its content
    must be afterwards; ``absent``: paths that must not exist afterwards.
    ``subprocess``: run as ``python -m harness`` with ``env`` added, a timeout and a memory limit.
    """

    id: str
    argv: tuple[str, ...]
    code: int
    fragment: str | None
    mechanism: str = ""
    files: dict[str, str | bytes | Callable[[Path], None]] = field(default_factory=dict)
    unchanged: tuple[str, ...] = ()
    kept_as: dict[str, str] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    subprocess: bool = False
    env: dict[str, str] = field(default_factory=dict)


def run(*args: str, unset: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``run`` with RUN_DEFAULTS for the options neither ``args`` gives nor ``unset`` names."""
    out = ["run", *args]
    for opt, value in RUN_DEFAULTS.items():
        if opt not in args and opt not in unset:
            out += [opt] if value is None else [opt, value]
    return tuple(out)


def with_config(text: str, *args: str, name: str = "c.toml") -> tuple[tuple[str, ...], dict[str, str]]:
    """``run --config`` a file holding ``text``; RUN_DEFAULTS only for the keys the file does not set."""
    in_file = tuple(f"--{key}" for key in ("methods", "datasets", "profile") if f"{key} =" in text)
    return run("--config", f"{{tmp}}/{name}", *args, unset=in_file), {name: text}


def case(id: str, argv_files, code: int, fragment: str | None, files: dict | None = None, **options) -> Case:
    """A Case (``options``: its other fields); ``mechanism`` names its handler."""
    argv, extra = argv_files if isinstance(argv_files[1], dict) else (argv_files, {})
    return Case(id, tuple(argv), code, fragment, files={**extra, **(files or {})}, **options)


def mechanism(name: str, *cases: Case) -> list[Case]:
    """``cases``, each handled by the mechanism ``name``."""
    return [replace(c, mechanism=name) for c in cases]


def report(*args: str) -> tuple[str, ...]:
    return ("report", "{tmp}/run", *args)


#: The line that byte 3,234 of ``not_utf8_at(3234)`` is on.
LINE_3234 = not_utf8_at(3234)[:3233].count(b"\n") + 1


CLASSES: dict[str, list[Case]] = {
    "command-line and config values": [
        *mechanism(
            "argparse (option types, unknown options)",
            case("time limit not a number", run("--time-limit", "soon"), 2, "invalid float value: 'soon'"),
            case("unknown option", run("--methds", "kde"), 2, "unrecognized arguments: --methds kde"),
            case("sample size not a number", run("--sample-size", "many"), 2, "invalid int value: 'many'"),
        ),
        *mechanism(
            "config.validate (each key's type, range and choices)",
            case(
                "time limit too large",
                run("--time-limit", "3000000"),
                2,
                "time_limit must be a finite number of seconds in (0, 2592000]",
            ),
            case("time limit nan", run("--time-limit", "nan"), 2, "time_limit must be a finite number"),
            case("time limit inf", run("--time-limit", "inf"), 2, "time_limit must be a finite number"),
            case("time limit zero", run("--time-limit", "0"), 2, "time_limit must be positive"),
            case("negative time limit", run("--time-limit", "-1"), 2, "time_limit must be positive"),
            case("time limit a string in config", with_config('time_limit = "10"\n'), 2, "time_limit must be a number"),
            case("seed beyond SQLite", run("--seeds", "0,9223372036854775808"), 2, "seeds must lie in 0..4294967295"),
            case(
                "seed beyond SQLite in config",
                with_config("seeds = [0, 9223372036854775808]\n"),
                2,
                "seeds must lie in 0..4294967295",
            ),
            case("seed beyond RandomState", run("--seeds", "4294967296"), 2, "too many seeds"),
            case(
                "seed beyond RandomState in a list",
                run("--seeds", "1,4294967296"),
                2,
                "seeds must lie in 0..4294967295",
            ),
            case("too many seeds", run("--seeds", "10000000000"), 2, "too many seeds"),
            case("seeds not integers", run("--seeds", "a,b"), 2, "seeds must be a count"),
            case("seeds a fraction", run("--seeds", "1.5"), 2, "seeds must be a count"),
            case("seeds zero", run("--seeds", "0"), 2, "at least 1"),
            case("negative seeds", run("--seeds", "0,-2"), 2, "non-negative"),
            case(
                "empty seeds list in config",
                with_config("seeds = []\n"),
                2,
                "seeds must be a positive integer or a non-empty list",
            ),
            case("seeds wrong type in config", with_config("seeds = [1.5]\n"), 2, "seeds"),
            case("sample size 1", run("--sample-size", "1"), 2, "sample_size must be at least 5"),
            case("sample size 4", run("--sample-size", "4"), 2, "sample_size must be at least 5"),
            case("negative sample size", run("--sample-size", "-5"), 2, "sample_size must be positive"),
            case("zero sample size", run("--sample-size", "0"), 2, "sample_size must be positive"),
            case(
                "sample size not whole in config",
                with_config("sample_size = 2.5\n"),
                2,
                "sample_size must be a whole number",
            ),
            case("wrong type in config", with_config('sample_size = "many"\n'), 2, "whole number"),
            case("name is dot", with_config('name = "."\n'), 2, "name must be a non-empty file name"),
            case("name with a slash", with_config('name = "../elsewhere"\n'), 2, "name must be a non-empty file name"),
            case("name with a backslash", with_config('name = "a\\\\b"\n'), 2, "name must be a non-empty file name"),
            case("name with a NUL", with_config('name = "a\\u0000b"\n'), 2, "name must be a non-empty file name"),
            case(
                "name escapes the reports folder",
                ("run", "--config", "{tmp}/c.toml", "--no-progress"),
                2,
                "name must be a non-empty file name",
                {"c.toml": 'name = ".."\nmethods = ["gaussian"]\nprofile = "smoke"\n'},
            ),
            case(
                "config file named ..toml",
                ("run", "--config", "{tmp}/..toml", "--no-progress"),
                2,
                "name must be a non-empty file name",
                {"..toml": 'methods = ["gaussian"]\n'},
            ),
            case("unknown profile", run("--profile", "quik"), 2, "did you mean 'quick'"),
            case("unknown profile (paper)", run("--profile", "papr"), 2, "did you mean 'paper'"),
            case("unknown device", run("--device", "tpu"), 2, "unknown device"),
            case("unknown device (gpu)", run("--device", "gpu"), 2, "unknown device"),
            case("unknown executor", run("--executor", "slurm"), 2, "unknown executor"),
            case("jobs not a number", run("--jobs", "many"), 2, "jobs must be 'auto' or a positive whole number"),
            case("zero jobs", run("--jobs", "0"), 2, "jobs must be positive"),
            case(
                "unknown config key",
                with_config('methods = ["gaussian"]\nprofle = "smoke"\n'),
                2,
                "did you mean 'profile'",
            ),
            case("methods wrong type", with_config("methods = 3\n"), 2, "methods must be"),
            case("methods empty", run("--methods", ","), 2, "methods is empty"),
            case("params not a table", with_config("params = 3\n"), 2, "params must be a table of per-method tables"),
        ),
        *mechanism(
            "config.resolve_names (method and dataset names)",
            case("unknown method", run("--methods", "gausian"), 2, "did you mean 'gaussian'"),
            case("unknown method (maf)", run("--methods", "mafff"), 2, "did you mean 'maf'"),
            case("unknown dataset", run("--datasets", "8gausians"), 2, "did you mean '8gaussians'"),
            case("unknown dataset (rings)", run("--datasets", "ringz"), 2, "did you mean 'rings'"),
            case("misspelt dataset group", run("--datasets", "2dd"), 2, "did you mean '2d'"),
            case(
                "params for absent method",
                with_config("[params.gaussain]\nridge = 1\n", "--methods", "kde"),
                2,
                "not in this run",
            ),
        ),
        *mechanism(
            "methods.resolve_params (the one parameter check)",
            case(
                "gan activation not a choice",
                with_config('methods = ["gan"]\n[params.gan]\nactivation = "tanhh"\n'),
                2,
                "method 'gan': parameter activation = 'tanhh' is not valid; valid: one of 'relu', 'silu', 'leaky_relu'",
            ),
            case(
                "supervised_diffusion hidden 0",
                with_config('methods = ["supervised_diffusion"]\n[params.supervised_diffusion]\nhidden = 0\n'),
                2,
                "parameter hidden = 0 is not valid; valid: 'auto' or an integer >= 1",
            ),
            case(
                "unknown method parameter",
                with_config('methods = ["gan"]\n[params.gan]\nactvation = "relu"\n'),
                2,
                "unknown parameter 'actvation' for method 'gan' (did you mean 'activation'?)",
            ),
            case(
                "method parameter wrong type",
                with_config('methods = ["kde"]\n[params.kde]\nmax_train = "many"\n'),
                2,
                "parameter max_train = 'many' is not valid; valid: an integer >= 2",
            ),
            case(
                "method parameter out of range",
                with_config('methods = ["maf"]\n[params.maf]\ndropout = 1.5\n'),
                2,
                "parameter dropout = 1.5 is not valid; valid: a finite number in [0, 1)",
            ),
            case(
                "method parameter list length",
                with_config('methods = ["gan"]\n[params.gan]\nbetas = [0.5]\n'),
                2,
                "a list of 2 items",
            ),
            case(
                "method parameter close choice",
                with_config('methods = ["score_diffusion"]\n[params.score_diffusion]\nsampler = "odee"\n'),
                2,
                "(did you mean 'ode'?)",
            ),
            case(
                "unknown kde parameter",
                with_config("[params.kde]\nbandwith = 1\n", "--methods", "kde"),
                2,
                "unknown parameter 'bandwith'",
            ),
        ),
    ],
    "options that would be silently ignored": mechanism(
        "__main__ option checks and config.check_executor_options (an option a command would ignore)",
        case("report format empty", report("--format", ""), 2, "--format names no format; valid: md, html, latex, csv"),
        case("report format only commas", report("--format", " , "), 2, "--format names no format"),
        case(
            "report format unknown",
            ("report", "{tmp}/run", "--format", "pdf"),
            2,
            "unknown report format 'pdf'",
            {"run": healthy_database},
        ),
        case("report of an empty run directory name", ("report", ""), 2, "the run directory is empty"),
        case("list profile unknown", ("list", "--profile", "bogus"), 2, "unknown profile 'bogus'; valid: smoke, quick"),
        case("list profile without methods", ("list", "--profile", "smoke"), 2, "give --methods too"),
        case("list methods empty", ("list", "--methods", ""), 2, "list --methods is empty"),
        case("config empty", run("--config", ""), 2, "--config is empty"),
        case("out empty", run("--out", ""), 2, "--out is empty"),
        case("data root empty", run("--data-root", ""), 2, "data_root must be a non-empty string"),
        case("data root empty in config", with_config('data_root = ""\n'), 2, "data_root must be a non-empty string"),
        case("address without ray", run("--address", "head:6379"), 2, "address is the Ray cluster's"),
        case(
            "address in config without ray", with_config('address = "head:6379"\n'), 2, "address is the Ray cluster's"
        ),
        case("jobs with ray", run("--executor", "ray", "--jobs", "2"), 2, "jobs sets the local executor's parallelism"),
        case(
            "data fetch into an empty data root", ("data", "fetch", "maf", "--data-root", ""), 2, "--data-root is empty"
        ),
    ),
    "config files that are not what they say": mechanism(
        "config.load_toml through toolkit.files.read_utf8 (a regular file of plausible size, UTF-8)",
        case("missing config file", run("--config", "{tmp}/nope.toml"), 2, "not found"),
        case("malformed TOML", with_config("methods = [\n"), 2, "not valid TOML"),
        case(
            "config is a directory", run("--config", "{tmp}/conf"), 2, "is a directory, not a file", {"conf": directory}
        ),
        case(
            "config is a FIFO",
            run("--config", "{tmp}/fifo.toml"),
            2,
            "is a FIFO (named pipe), not a file",
            {"fifo.toml": fifo},
            subprocess=True,
        ),
        case(
            "config is a character device",
            run("--config", "/dev/zero"),
            2,
            "config file /dev/zero is a character device",
            subprocess=True,
        ),
        case(
            "config nested thousands deep",
            with_config("seeds = " + "[" * 5000 + "]" * 5000 + "\n"),
            2,
            "nests arrays or tables too deeply",
        ),
        case(
            "config of two megabytes",
            with_config("# padding\n" * 200_000 + 'methods = ["gaussian"]\n'),
            2,
            "at most 1,048,576 are read",
        ),
        case(
            "config read in a C locale",
            with_config('# données: café\nmethods = ["gaussian"]\nseeds = 1\n', "--out", "{tmp}/run"),
            0,
            None,
            subprocess=True,
            env=C_LOCALE,
        ),
    ),
    "data files that are not what they say": [
        *mechanism(
            "datasets.tabular.read_table (toolkit.files.regular_file, the .npy header, the streamed text check)",
            case(
                "not UTF-8 at byte 3234",
                run("--datasets", "file:{tmp}/latin.csv"),
                2,
                f"latin.csv: line {LINE_3234} (byte 3234) is not UTF-8",
                {"latin.csv": not_utf8_at(3234)},
            ),
            case(
                "not UTF-8 on the first line",
                run("--datasets", "file:{tmp}/head.csv"),
                2,
                "head.csv: line 1 (byte 1) is not UTF-8",
                {"head.csv": b"\xff" + table_text().encode()},
            ),
            case(
                "npy with inf",
                run("--datasets", "file:{tmp}/inf.npy"),
                2,
                "is not finite",
                {"inf.npy": lambda p: np.save(p, np.r_[np.ones((19, 3)), [[1.0, np.inf, 2.0]]])},
            ),
            case(
                "data file with NaN",
                run("--datasets", "file:{tmp}/nan.csv"),
                2,
                "NaN",
                {"nan.csv": table_text() + "1.0,nan,2.0\n"},
            ),
            case(
                "data file with text",
                run("--datasets", "file:{tmp}/txt.csv"),
                2,
                "'abc'",
                {"txt.csv": table_text() + "1.0,abc,2.0\n"},
            ),
            case(
                "ragged rows",
                run("--datasets", "file:{tmp}/rag.csv"),
                2,
                "column",
                {"rag.csv": table_text() + "1.0,2.0\n"},
            ),
            case("one column", run("--datasets", "file:{tmp}/one.csv"), 2, "column", {"one.csv": table_text(cols=1)}),
            case("too few rows", run("--datasets", "file:{tmp}/few.csv"), 2, "rows", {"few.csv": table_text(rows=4)}),
            case("empty data file", run("--datasets", "file:{tmp}/empty.csv"), 2, "empty", {"empty.csv": ""}),
            case("missing data file", run("--datasets", "file:{tmp}/absent.csv"), 2, "no such file"),
            case(
                "npy header claims a trillion rows",
                run("--datasets", "file:{tmp}/huge.npy"),
                2,
                "its header claims an array of shape (1000000000000, 3)",
                {"huge.npy": npy_claiming((10**12, 3))},
            ),
            case(
                "npy header claims more columns than the file holds",
                run("--datasets", "file:{tmp}/wide.npy"),
                2,
                "its header claims an array of shape (20, 100000000)",
                {"wide.npy": npy_claiming((20, 10**8))},
            ),
            case(
                "npz archive named .npy",
                run("--datasets", "file:{tmp}/z.npy"),
                2,
                "a .npz (zip) archive, not a .npy array",
                {"z.npy": npz_named_npy},
            ),
            case(
                "a gigabyte of NUL bytes named .csv",
                run("--datasets", "file:{tmp}/nul.csv"),
                2,
                "nul.csv: line 1 (byte 1) is a NUL byte",
                {"nul.csv": sparse_nul(1 << 30)},
                subprocess=True,
            ),
        ),
        *mechanism(
            "config.check_text (names must be text the results database can store)",
            case(
                "data file name not UTF-8",
                run("--datasets", "file:{tmp}/\udcff.csv"),
                2,
                "holds bytes that are not UTF-8 text",
                {"\udcff.csv": table_text(rows=100)},
            ),
        ),
        *mechanism(
            "__main__ resource errors (RecursionError and MemoryError on input: exit 2, one line)",
            case(
                "method variant nested thousands deep",
                run("--methods", "kde[bandwidth=" + "[" * 3000 + "]" * 3000 + "]"),
                2,
                "the input is nested too deeply",
            ),
        ),
    ],
    "data that cannot be fitted": [
        *mechanism(
            "datasets.tabular.clean_table at planning (runner.load_splits): columns that vary, exact power-of-two "
            "scaling before standardising",
            case(
                "all rows identical",
                run("--datasets", "file:{tmp}/same.csv"),
                2,
                "same.csv: every column is constant (all rows are the same)",
                {"same.csv": table(c1=np.ones_like, c2=np.ones_like, c3=np.ones_like)},
            ),
            case(
                "all rows identical (npy)",
                run("--datasets", "file:{tmp}/same.npy"),
                2,
                "every column is constant",
                {"same.npy": table(c1=np.zeros_like, c2=np.ones_like, c3=np.ones_like)},
            ),
            case(
                "all-zero table",
                run("--datasets", "file:{tmp}/zero.csv"),
                2,
                "every column is constant",
                {"zero.csv": table(c1=np.zeros_like, c2=np.zeros_like, c3=np.zeros_like)},
            ),
            case(
                "a single non-constant column",
                run("--datasets", "file:{tmp}/single.csv"),
                2,
                "only 1 non-constant column (column 1; the other 2 hold a single value each)",
                {"single.csv": table(c2=lambda c: np.full_like(c, 5.0), c3=np.ones_like)},
            ),
            case(
                "a column near the float limit",
                run("--datasets", "file:{tmp}/big.csv", "--seeds", "1"),
                0,
                None,
                {"big.csv": table(c2=lambda c: 1e308 * np.sign(c))},
            ),
            case(
                "a column near the float limit with tiny values",
                run("--datasets", "file:{tmp}/wide.csv", "--seeds", "1"),
                0,
                None,
                {"wide.csv": table(c2=lambda c: np.where(c > 0, 1.5e308, 1e-300))},
            ),
        ),
        *mechanism(
            "runner.load_splits (planning: every pending split loaded and checked by Splits.check)",
            case(
                "table too small for the sample metrics",
                run("--datasets", "file:{tmp}/small.csv"),
                2,
                "its test split holds 3 row(s); the metrics need at least 5",
                {"small.csv": table(rows=30)},
            ),
            case(
                "missing MAF files",
                run("--datasets", "power", "--data-root", "{tmp}/root"),
                2,
                "dataset power: raw files missing",
                {"root": directory},
            ),
            case(
                "missing UCI files",
                run("--datasets", "wine-quality-red", "--data-root", "{tmp}/root"),
                2,
                "data fetch uci",
                {"root": directory},
            ),
        ),
        *mechanism(
            "__main__ data-root check",
            case("missing data root", run("--data-root", "{tmp}/no-root"), 2, "does not exist"),
        ),
    ],
    "stale resumes": mechanism(
        "runner.check_fingerprints (a file: dataset's content hash kept in the run's meta)",
        case(
            "csv replaced since its rows were computed",
            run("--datasets", "file:{tmp}/d.csv", "--out", "{tmp}/run"),
            2,
            "d.csv has changed since rows of it were computed",
            {"d.csv": table(), "run": fingerprinted_run("d.csv")},
        ),
        case(
            "npy replaced since its rows were computed",
            run("--datasets", "file:{tmp}/d.npy", "--out", "{tmp}/run"),
            2,
            "use another --out for the new data, or restore the file",
            {"d.npy": table(), "run": fingerprinted_run("d.npy")},
        ),
    ),
    "damaged run directories": [
        *mechanism(
            "store.ResultsStore (integrity check when opened) and store.salvage",
            case(
                "damaged database: report",
                ("report", "{tmp}/run"),
                2,
                "rows are readable: `python -m harness report",
                {"run": damaged_database},
            ),
            case(
                "damaged database: run",
                run("--out", "{tmp}/run"),
                2,
                "results.sqlite is damaged",
                {"run": damaged_database},
            ),
            case(
                "damaged database: not a database",
                ("report", "{tmp}/run"),
                2,
                "is damaged (file is not a database)",
                {"run/results.sqlite": b"this is not SQLite\n" * 300},
            ),
            case(
                "salvage a healthy database",
                ("report", "{tmp}/run", "--salvage"),
                2,
                "is not damaged; nothing to salvage",
                {"run": healthy_database},
            ),
            case("report of a folder without results", ("report", "{tmp}"), 2, "no results database at"),
        ),
        *mechanism(
            "store.decode_row (the one decoder of stored rows)",
            case(
                "row whose metrics are not JSON",
                report(),
                0,
                "row 'k001' is damaged (metrics is not valid JSON ('{x')); shown as failed",
                {"run": damaged_row("metrics", "{x")},
            ),
            case(
                "row whose metrics are a JSON list",
                report(),
                0,
                "row 'k001' is damaged (metrics is not a JSON object ('[1,2]'))",
                {"run": damaged_row("metrics", "[1,2]")},
            ),
            case(
                "row whose params are JSON null",
                report(),
                0,
                "params is not a JSON object ('null')",
                {"run": damaged_row("params", "null")},
            ),
            case(
                "row whose info is a JSON string",
                report(),
                0,
                "info is not a JSON object",
                {"run": damaged_row("info", '"text"')},
            ),
            case(
                "row whose timings are cut short",
                report(),
                0,
                "timings is not valid JSON",
                {"run": damaged_row("timings", '{"fit_s": ')},
            ),
            case(
                "row whose metrics nest 100000 deep",
                report(),
                0,
                "metrics is not valid JSON",
                {"run": damaged_row("metrics", "[" * 100_000 + "]" * 100_000)},
            ),
            case(
                "row whose seed is text",
                report(),
                0,
                "row 'k001' is damaged (seed is 'x', not an integer); left out",
                {"run": damaged_row("seed", "x")},
            ),
            case(
                "row without a cell key",
                report(),
                0,
                "row None is damaged (cell_key is None, not a name); left out",
                {"run": sql("UPDATE results SET cell_key = NULL WHERE cell_key = 'k001'")},
            ),
            case(
                "metric value that is not a number",
                report(),
                0,
                "1 metric value(s) in 1 row(s) are not numbers and are left out (first: row 'k002', metric "
                "'test_loglik')",
                {"run": damaged_row("metrics", '{"kind": "exact", "test_loglik": "abc"}', key="k002")},
            ),
            case(
                "meta entry that is not JSON",
                report(),
                0,
                "meta entry 'config' is not valid JSON; left out",
                {"run": damaged_meta("config", "{x")},
            ),
            case(
                "meta config that is not an object",
                report(),
                0,
                "meta entry 'config' is not a JSON object; left out",
                {"run": damaged_meta("config", "[1]")},
            ),
            case(
                "run resumes past a damaged row",
                run("--out", "{tmp}/run", "--seeds", "1"),
                0,
                "row 'k001' is damaged (metrics is not a JSON object",
                {"run": damaged_row("metrics", "[1,2]")},
            ),
            case(
                "salvage a database with a damaged row",
                report("--salvage"),
                0,
                "kept 2 readable rows in a new database",
                {"run": damaged_row("info", "{x")},
            ),
        ),
        *mechanism(
            "pool.reap_stale_workers (reads only the regular files of .workers)",
            case(
                "worker file that is a FIFO",
                run("--out", "{tmp}/run", "--seeds", "1"),
                0,
                None,
                {"run": healthy_database, "run/.workers/4242": fifo},
                subprocess=True,
            ),
        ),
    ],
    "results directories that are not ours": [
        *mechanism(
            "store.ResultsStore._check_ours (read-only, before any write or WAL switch)",
            case(
                "report of another program's SQLite file",
                report(),
                2,
                "is not a densitybench results database (it has no table 'results' (tables: people))",
                {"run/results.sqlite": foreign_database},
                unchanged=("run/results.sqlite",),
            ),
            case(
                "run into another program's SQLite file",
                run("--out", "{tmp}/run"),
                2,
                "is not a densitybench results database",
                {"run/results.sqlite": foreign_database},
                unchanged=("run/results.sqlite",),
                absent=("run/.run.lock",),
            ),
            case(
                "salvage another program's SQLite file",
                report("--salvage"),
                2,
                "is not a densitybench results database",
                {"run/results.sqlite": foreign_database},
                unchanged=("run/results.sqlite",),
                absent=("run/results.sqlite.damaged",),
            ),
            case(
                "report of a results table without our columns",
                report(),
                2,
                "its table 'results' lacks the column(s) method, dataset",
                {"run/results.sqlite": results_without_our_columns},
                unchanged=("run/results.sqlite",),
            ),
            case(
                "report of a zero-byte database",
                report(),
                2,
                "results.sqlite is empty (0 bytes), not a densitybench results database",
                {"run/results.sqlite": b"", "run/results.csv": export_of(3)},
                unchanged=("run/results.sqlite", "run/results.csv"),
            ),
            case(
                "run into a zero-byte database",
                run("--out", "{tmp}/run"),
                2,
                "is empty (0 bytes)",
                {"run/results.sqlite": b""},
                unchanged=("run/results.sqlite",),
            ),
            case(
                "database that is a directory",
                report(),
                2,
                "results database {tmp}/run/results.sqlite is a directory, not a file",
                {"run/results.sqlite": directory},
            ),
            case(
                "database that is a FIFO",
                report(),
                2,
                "results.sqlite is a FIFO (named pipe), not a file",
                {"run/results.sqlite": fifo},
            ),
        ),
        *mechanism(
            "store.protect_export and the report-file check of __main__.write_report_safely",
            case(
                "export holding more rows than the database",
                report(),
                0,
                "results.csv held 5 rows, the results database 3: the older export is kept as results.older.csv",
                {"run": rows_database, "run/results.csv": export_of(5)},
                kept_as={"run/results.csv": "run/results.older.csv"},
            ),
            case(
                "export that is a directory",
                report(),
                2,
                "results.csv is a directory, not a file",
                {"run": rows_database, "run/results.csv": directory},
            ),
            case(
                "export that is a FIFO",
                report(),
                2,
                "results.csv is a FIFO (named pipe), not a file",
                {"run": rows_database, "run/results.csv": fifo},
                subprocess=True,
            ),
            case(
                "artefact that is a FIFO",
                report("--format", "md"),
                2,
                "artefact {tmp}/run/artifacts/k000.npz is a FIFO (named pipe), not a file",
                {"run": rows_database, "run/artifacts/k000.npz": fifo},
                subprocess=True,
            ),
            case(
                "report.md that is a FIFO",
                report("--format", "md"),
                2,
                "report.md is a FIFO (named pipe), not a file",
                {"run": rows_database, "run/report.md": fifo},
                subprocess=True,
            ),
        ),
    ],
    "writes outside the run directory": mechanism(
        "store.make_directory (removes the folders it made when the output is refused)",
        case(
            "output not writable",
            run("--out", "{tmp}/plainfile/sub"),
            2,
            "cannot create output directory",
            {"plainfile": "x"},
        ),
        case(
            "output name too long leaves no new parents",
            run("--out", "{tmp}/new/sub/" + "x" * 300),
            2,
            "cannot create output directory",
            absent=("new",),
        ),
    ),
    "locales": mechanism(
        "explicit UTF-8 in every text file written (report/writer.py) and the console's error handler",
        case(
            "report.md written in a C locale",
            report("--format", "md,csv"),
            0,
            None,
            {"run": rows_database},
            subprocess=True,
            env=C_LOCALE,
        ),
    ),
}

CORPUS: list[Case] = [c for cases in CLASSES.values() for c in cases]

#: A sample run as real ``python -m harness`` subprocesses: one per kind of check.
SUBPROCESS_SAMPLE = (
    "time limit nan",
    "damaged database: report",
    "not UTF-8 at byte 3234",
    "gan activation not a choice",
    "unknown option",
)


def materialise(case: Case, tmp: Path) -> list[str]:
    """Write the case's files under ``tmp``; return its argv with ``{tmp}`` filled in."""
    for name, content in case.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return [a.replace("{tmp}", str(tmp)) for a in case.argv]


def snapshot(case: Case, tmp: Path) -> dict[str, bytes | None]:
    """Where the case must leave which bytes (None: absent): its ``unchanged`` files and ``kept_as`` copies."""
    moves = {**{name: name for name in case.unchanged}, **case.kept_as}
    return {after: (tmp / now).read_bytes() if (tmp / now).is_file() else None for now, after in moves.items()}


def check_outcome(case: Case, code: int, err: str, tmp: Path, before: dict[str, bytes | None]) -> None:
    lines = err.strip().splitlines()
    assert code == case.code, (case.id, code, err)
    assert "Traceback" not in err, (case.id, err)
    if case.fragment is None:
        assert lines == [], (case.id, err)
    else:
        assert len(lines) == 1, (case.id, err)
        assert case.fragment.replace("{tmp}", str(tmp)) in lines[0], (case.id, lines[0])
    if case.code == 2 and case.argv[0] == "run":
        assert not (tmp / "out").exists(), f"{case.id}: output written although the input was refused"
    for name, content in before.items():
        after = (tmp / name).read_bytes() if (tmp / name).is_file() else None
        assert after == content, f"{case.id}: {name} changed"
    for name in case.absent:
        assert not os.path.lexists(tmp / name), f"{case.id}: {name} was left behind"


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (SUBPROCESS_MEMORY, SUBPROCESS_MEMORY))


def run_subprocess(case: Case, tmp: Path, argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **case.env}
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_limit_memory,
    )


def test_corpus_is_large_grouped_and_unique():
    assert len(CORPUS) >= 110
    assert len({c.id for c in CORPUS}) == len(CORPUS)
    assert all(c.mechanism for c in CORPUS)
    assert set(SUBPROCESS_SAMPLE) <= {c.id for c in CORPUS if not c.subprocess}


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_corpus(case: Case, tmp_path: Path, capsys):
    argv = materialise(case, tmp_path)
    before = snapshot(case, tmp_path)
    if case.subprocess:
        proc = run_subprocess(case, tmp_path, argv)
        try:
            _, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"{case.id}: no answer after {SUBPROCESS_TIMEOUT} s")
        code, err = proc.returncode, err.decode("utf-8", "replace")
    else:
        try:
            code = main(argv)
        except SystemExit as e:  # argparse errors exit from inside main
            code = e.code
        err = capsys.readouterr().err
    check_outcome(case, code, err, tmp_path, before)


def test_corpus_through_the_real_entry_point(tmp_path: Path):
    """The sample as real subprocesses, started together: same status and message as in-process."""
    cases = [c for c in CORPUS if c.id in SUBPROCESS_SAMPLE]
    procs = []
    for i, c in enumerate(cases):
        folder = tmp_path / str(i)
        folder.mkdir()
        argv = materialise(c, folder)
        procs.append((c, folder, snapshot(c, folder), run_subprocess(c, folder, argv)))
    for c, folder, before, proc in procs:
        _, err = proc.communicate(timeout=300)
        check_outcome(c, proc.returncode, err.decode("utf-8", "replace"), folder, before)


@pytest.mark.parametrize("scale", [4e307, 1e-200, 1e-310])
def test_standardisation_survives_extreme_scales(scale):
    """A column of magnitude near the float limits standardises to mean 0 and sd 1 (an exact power-of-two
    scaling first: no overflow, no underflow of the variance); the other columns come out bit for bit
    as the plain formula gives them."""
    from datasets.tabular import clean_table

    x = np.random.default_rng(1).standard_normal((500, 3))
    x[:, 1] *= scale
    splits, cleaning = clean_table(x, seed=0)
    train = splits.train
    assert np.isfinite(train).all()
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(train.std(0), 1, rtol=1e-12)
    plain, _ = clean_table(x[:, [0, 2]], seed=0)
    np.testing.assert_array_equal(plain.train, train[:, [0, 2]])
    assert np.isfinite(cleaning.mean).all() and (cleaning.std > 0).all()


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_utf8_check_names_the_line_and_byte_wherever_the_read_chunks_end(chunk, tmp_path):
    """The whole file is checked; a bad byte inside a multi-byte character split across reads is found."""
    from datasets.tabular import check_utf8
    from harness.errors import UserError

    text = ("é,b\n" * 3 + "1.0,2.0\n" * 40).encode()
    path = tmp_path / "t.csv"
    for at in (1, 2, len(text) - 3):  # 'é' is 2 bytes: break its first byte, its second, then a late one
        data = bytearray(text)
        data[at - 1] = 0xFF if at != 2 else 0x41
        path.write_bytes(bytes(data))
        bad = at if at != 2 else 1  # a broken second byte makes the sequence invalid from its first
        line = bytes(data[: bad - 1]).count(b"\n") + 1
        with pytest.raises(UserError, match=rf"line {line} \(byte {bad}\)"):
            check_utf8(path, chunk)
    path.write_bytes(text)
    check_utf8(path, chunk)
