"""The bad-input corpus: every known bad command line, config, data file and damaged run directory,
as data, with the exit status and a fragment of the one-line message it must give.

Each case runs ``harness.__main__.main(argv)`` in this process (the path ``python -m harness`` takes
after start-up), and ``test_corpus_through_the_real_entry_point`` runs a sample of them as real
subprocesses. Cases that exit 2 must do so before any cell runs: their default output directory
must not exist afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
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


def table_text(rows: int = 20, cols: int = 3) -> str:
    rng = np.random.default_rng(0)
    return "\n".join(",".join(f"{v:.4f}" for v in rng.standard_normal(cols)) for _ in range(rows)) + "\n"


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


@dataclass(frozen=True)
class Case:
    """``argv`` ("{tmp}" is the case's folder) -> exit ``code`` and ``fragment`` in the one-line message.

    ``files``: name -> text, bytes, or a function of the path that makes it (a run directory).
    """

    id: str
    argv: tuple[str, ...]
    code: int
    fragment: str
    files: dict[str, str | bytes | Callable[[Path], None]] = field(default_factory=dict)


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


def case(id: str, argv_files, code: int, fragment: str, files: dict | None = None) -> Case:
    argv, extra = argv_files if isinstance(argv_files[1], dict) else (argv_files, {})
    return Case(id, tuple(argv), code, fragment, {**extra, **(files or {})})


#: The line that byte 3,234 of ``not_utf8_at(3234)`` is on.
LINE_3234 = not_utf8_at(3234)[:3233].count(b"\n") + 1

CORPUS: list[Case] = [
    # --- option ranges, damaged files and unsafe names
    case(
        "time limit too large",
        run("--time-limit", "3000000"),
        2,
        "time_limit must be a finite number of seconds in (0, 2592000]",
    ),
    case("time limit nan", run("--time-limit", "nan"), 2, "time_limit must be a finite number"),
    case("time limit inf", run("--time-limit", "inf"), 2, "time_limit must be a finite number"),
    case("seed beyond SQLite", run("--seeds", "0,9223372036854775808"), 2, "seeds must lie in 0..4294967295"),
    case(
        "seed beyond SQLite in config",
        with_config("seeds = [0, 9223372036854775808]\n"),
        2,
        "seeds must lie in 0..4294967295",
    ),
    case("seed beyond RandomState", run("--seeds", "4294967296"), 2, "too many seeds"),
    case("seed beyond RandomState in a list", run("--seeds", "1,4294967296"), 2, "seeds must lie in 0..4294967295"),
    case(
        "damaged database: report",
        ("report", "{tmp}/run"),
        2,
        "rows are readable: `python -m harness report",
        {"run": damaged_database},
    ),
    case("damaged database: run", run("--out", "{tmp}/run"), 2, "results.sqlite is damaged", {"run": damaged_database}),
    case(
        "not UTF-8 at byte 3234",
        run("--datasets", "file:{tmp}/latin.csv"),
        2,
        f"latin.csv: line {LINE_3234} (byte 3234) is not UTF-8",
        {"latin.csv": not_utf8_at(3234)},
    ),
    case("sample size 1", run("--sample-size", "1"), 2, "sample_size must be at least 5"),
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
        "name escapes the reports folder",
        ("run", "--config", "{tmp}/c.toml", "--no-progress"),
        2,
        "name must be a non-empty file name",
        {"c.toml": 'name = ".."\nmethods = ["gaussian"]\nprofile = "smoke"\n'},
    ),
    # --- more of the same kinds
    case("time limit zero", run("--time-limit", "0"), 2, "time_limit must be positive"),
    case("negative time limit", run("--time-limit", "-1"), 2, "time_limit must be positive"),
    case("time limit not a number", run("--time-limit", "soon"), 2, "invalid float value: 'soon'"),
    case("time limit a string in config", with_config('time_limit = "10"\n'), 2, "time_limit must be a number"),
    case("too many seeds", run("--seeds", "10000000000"), 2, "too many seeds"),
    case("sample size 4", run("--sample-size", "4"), 2, "sample_size must be at least 5"),
    case(
        "sample size not whole in config", with_config("sample_size = 2.5\n"), 2, "sample_size must be a whole number"
    ),
    case("name is dot", with_config('name = "."\n'), 2, "name must be a non-empty file name"),
    case("name with a slash", with_config('name = "../elsewhere"\n'), 2, "name must be a non-empty file name"),
    case("name with a backslash", with_config('name = "a\\\\b"\n'), 2, "name must be a non-empty file name"),
    case("name with a NUL", with_config('name = "a\\u0000b"\n'), 2, "name must be a non-empty file name"),
    case(
        "config file named ..toml",
        ("run", "--config", "{tmp}/..toml", "--no-progress"),
        2,
        "name must be a non-empty file name",
        {"..toml": 'methods = ["gaussian"]\n'},
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
    case(
        "report format unknown",
        ("report", "{tmp}/run", "--format", "pdf"),
        2,
        "unknown report format 'pdf'",
        {"run": healthy_database},
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
    case("unknown option", run("--methds", "kde"), 2, "unrecognized arguments: --methds kde"),
    case("sample size not a number", run("--sample-size", "many"), 2, "invalid int value: 'many'"),
    case(
        "empty seeds list in config",
        with_config("seeds = []\n"),
        2,
        "seeds must be a positive integer or a non-empty list",
    ),
    case("params not a table", with_config("params = 3\n"), 2, "params must be a table of per-method tables"),
    case("methods empty", run("--methods", ","), 2, "methods is empty"),
    # --- carried over from tests/test_cli.py and tests/test_reliability.py
    case("unknown method", run("--methods", "gausian"), 2, "did you mean 'gaussian'"),
    case("unknown method (maf)", run("--methods", "mafff"), 2, "did you mean 'maf'"),
    case("unknown dataset", run("--datasets", "8gausians"), 2, "did you mean '8gaussians'"),
    case("unknown dataset (rings)", run("--datasets", "ringz"), 2, "did you mean 'rings'"),
    case("misspelt dataset group", run("--datasets", "2dd"), 2, "did you mean '2d'"),
    case("unknown profile", run("--profile", "quik"), 2, "did you mean 'quick'"),
    case("unknown profile (paper)", run("--profile", "papr"), 2, "did you mean 'paper'"),
    case("seeds not integers", run("--seeds", "a,b"), 2, "seeds must be a count"),
    case("seeds a fraction", run("--seeds", "1.5"), 2, "seeds must be a count"),
    case("seeds zero", run("--seeds", "0"), 2, "at least 1"),
    case("negative seeds", run("--seeds", "0,-2"), 2, "non-negative"),
    case("negative sample size", run("--sample-size", "-5"), 2, "sample_size must be positive"),
    case("zero sample size", run("--sample-size", "0"), 2, "sample_size must be positive"),
    case("unknown device", run("--device", "tpu"), 2, "unknown device"),
    case("unknown device (gpu)", run("--device", "gpu"), 2, "unknown device"),
    case("unknown executor", run("--executor", "slurm"), 2, "unknown executor"),
    case("jobs not a number", run("--jobs", "many"), 2, "jobs must be 'auto' or a positive whole number"),
    case("zero jobs", run("--jobs", "0"), 2, "jobs must be positive"),
    case("unknown config key", with_config('methods = ["gaussian"]\nprofle = "smoke"\n'), 2, "did you mean 'profile'"),
    case("wrong type in config", with_config('sample_size = "many"\n'), 2, "whole number"),
    case("seeds wrong type in config", with_config("seeds = [1.5]\n"), 2, "seeds"),
    case("methods wrong type", with_config("methods = 3\n"), 2, "methods must be"),
    case("missing config file", run("--config", "{tmp}/nope.toml"), 2, "not found"),
    case("malformed TOML", with_config("methods = [\n"), 2, "not valid TOML"),
    case(
        "unknown kde parameter",
        with_config("[params.kde]\nbandwith = 1\n", "--methods", "kde"),
        2,
        "unknown parameter 'bandwith'",
    ),
    case(
        "params for absent method",
        with_config("[params.gaussain]\nridge = 1\n", "--methods", "kde"),
        2,
        "not in this run",
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
    case("ragged rows", run("--datasets", "file:{tmp}/rag.csv"), 2, "column", {"rag.csv": table_text() + "1.0,2.0\n"}),
    case("one column", run("--datasets", "file:{tmp}/one.csv"), 2, "column", {"one.csv": table_text(cols=1)}),
    case("too few rows", run("--datasets", "file:{tmp}/few.csv"), 2, "rows", {"few.csv": table_text(rows=4)}),
    case("empty data file", run("--datasets", "file:{tmp}/empty.csv"), 2, "empty", {"empty.csv": ""}),
    case("missing data file", run("--datasets", "file:{tmp}/absent.csv"), 2, "no such file"),
    case("missing data root", run("--data-root", "{tmp}/no-root"), 2, "does not exist"),
    case(
        "output not writable",
        run("--out", "{tmp}/plainfile/sub"),
        2,
        "cannot create output directory",
        {"plainfile": "x"},
    ),
]

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
            path.write_text(content)
    return [a.replace("{tmp}", str(tmp)) for a in case.argv]


def check_outcome(case: Case, code: int, err: str, tmp: Path) -> None:
    lines = err.strip().splitlines()
    assert code == case.code, (case.id, code, err)
    assert len(lines) == 1 and "Traceback" not in err, (case.id, err)
    assert case.fragment in lines[0], (case.id, lines[0])
    if case.code == 2 and case.argv[0] == "run":
        assert not (tmp / "out").exists(), f"{case.id}: output written although the input was refused"


def test_corpus_is_large_and_unique():
    assert len(CORPUS) >= 40
    assert len({c.id for c in CORPUS}) == len(CORPUS)
    assert set(SUBPROCESS_SAMPLE) <= {c.id for c in CORPUS}


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_corpus(case: Case, tmp_path: Path, capsys):
    argv = materialise(case, tmp_path)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors exit from inside main
        code = e.code
    check_outcome(case, code, capsys.readouterr().err, tmp_path)


def test_corpus_through_the_real_entry_point(tmp_path: Path):
    """The sample as real subprocesses, started together: same status and message as in-process."""
    cases = [c for c in CORPUS if c.id in SUBPROCESS_SAMPLE]
    procs = []
    for i, c in enumerate(cases):
        folder = tmp_path / str(i)
        folder.mkdir()
        procs.append(
            (
                c,
                folder,
                subprocess.Popen(
                    [sys.executable, "-m", "harness", *materialise(c, folder)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONWARNINGS": "ignore"},
                ),
            )
        )
    for c, folder, proc in procs:
        _, err = proc.communicate(timeout=300)
        check_outcome(c, proc.returncode, err, folder)


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
