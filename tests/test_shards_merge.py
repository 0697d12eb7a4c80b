"""Grid shards cover a grid exactly once and stay put; `merge` puts the shards of a grid back
together into the report of a single run, keeps each row's origin, never changes its inputs,
refuses differing duplicates, foreign and damaged files, and is idempotent."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from harness import config as config_mod
from harness.__main__ import main
from harness.errors import UserError
from harness.merge import SOURCE_KEY, merge_runs
from harness.runner import make_cells
from harness.shards import Shard, check_run_directory, parse_shard, shard_index
from harness.store import ARTIFACT_DIR, DB_NAME, LOCK_NAME, ResultsStore

# ------------------------------------------------------------------ shards of a planned grid


def planned_cells(seeds: list[int]) -> list:
    cfg = config_mod.validate(
        {"methods": "gaussian,kde[max_train=500,1000]", "datasets": "2d", "seeds": seeds, "profile": "smoke"}
    )
    return make_cells(cfg)[0]


@pytest.mark.parametrize("count", [1, 2, 3, 7, 24, 96, 500])
def test_shards_cover_the_grid_exactly_once(count):
    cells = planned_cells([0, 1, 2, 3])  # 3 method variants x 8 datasets x 4 seeds = 96 cells
    keys = [c.key for c in cells]
    assert len(keys) == len(set(keys)) == 96
    owners = {key: [i for i in range(count) if Shard(i, count).holds(key)] for key in keys}
    assert all(len(found) == 1 for found in owners.values())
    shares = [[c.key for c in Shard(i, count).select(cells)] for i in range(count)]
    assert sorted(k for share in shares for k in share) == sorted(keys)
    assert all(share == [k for k in keys if k in set(share)] for share in shares)  # grid order kept
    if count <= 3:  # a hash spreads 96 cells over a few shards: none gets less than half its share
        assert min(len(s) for s in shares) >= 96 / count / 2


def test_a_cells_shard_survives_adding_seeds():
    before, after = ([c.key for c in planned_cells(seeds)] for seeds in ([0, 1], [0, 1, 2, 5]))
    assert set(before) < set(after)
    for count in (2, 3, 5):
        assert {k: shard_index(k, count) for k in before} == {k: shard_index(k, count) for k in after if k in before}


@pytest.mark.parametrize("text", ["3/3", "1/0", "a/b", "-1/3", "1/2/3", "1", "", "0/100001"])
def test_bad_shard_values_exit_2_with_one_line(text, tmp_path, capsys):
    argv = ["run", "--methods", "gaussian", "--datasets", "8gaussians", "--profile", "smoke", f"--shard={text}"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shard" in err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_shard_in_a_config_file_is_checked_and_normalised(tmp_path):
    (tmp_path / "bad.toml").write_text('shard = "4/4"\n')
    with pytest.raises(UserError, match="below N = 4"):
        config_mod.build(str(tmp_path / "bad.toml"), {})
    (tmp_path / "good.toml").write_text('shard = " 3 / 4 "\n')
    cfg = config_mod.build(str(tmp_path / "good.toml"), {})
    assert cfg.shard == "3/4" and parse_shard(cfg.shard) == Shard(3, 4)
    assert config_mod.build(None, {"shard": "0/4"}).hash() == config_mod.Config().hash()  # shards share a hash


def test_a_run_directory_keeps_to_the_share_it_holds():
    check_run_directory(None, False, Shard(0, 2), "d")  # a new directory takes any share
    check_run_directory({"shard": "0/2"}, False, None, "d")  # so does one without rows
    check_run_directory({"shard": "0/2"}, True, Shard(0, 2), "d")  # resume
    check_run_directory({}, True, None, "d")  # a store from before shards: the whole grid
    with pytest.raises(UserError, match="holds shard 0/2 .* asks for --shard 1/2"):
        check_run_directory({"shard": "0/2"}, True, Shard(1, 2), "d")
    with pytest.raises(UserError, match="holds shard 0/2 .* asks for the whole grid"):
        check_run_directory({"shard": "0/2"}, True, None, "d")
    with pytest.raises(UserError, match="holds the whole grid"):
        check_run_directory({"shard": None}, True, Shard(1, 2), "d")


# ------------------------------------------------------------------ a sharded run against a single run

GRID = ["--methods", "gaussian,kde[max_train=500]", "--datasets", "8gaussians,rings", "--seeds", "2"]
GRID += ["--profile", "smoke", "--sample-size", "200", "--no-progress"]
SHARDS = 3
#: Words of the headings, columns and rows that hold time measurements (they differ from run to run).
TIMES = re.compile(r"\b(time|rate|throughput|phases)\b", re.IGNORECASE)


def harness(*args: str) -> tuple[int, str]:
    """``python -m harness ARGS`` in this process: its exit status and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(list(args))
    return code, printed.getvalue()


def snapshot(run_dir: Path) -> dict[str, str]:
    """Every file under ``run_dir`` by relative path, with its content's hash."""
    return {
        p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The smoke grid run once whole and once as three shards, and the shards merged."""
    base = tmp_path_factory.mktemp("shards")
    assert harness("run", *GRID, "--out", str(base / "single"))[0] == 0
    for i in range(SHARDS):
        code, printed = harness("run", *GRID, "--shard", f"{i}/{SHARDS}", "--out", str(base / f"shard{i}"))
        assert code == 0 and f"(shard {i}/{SHARDS} of a 8-cell grid)" in printed
    shards = [base / f"shard{i}" for i in range(SHARDS)]
    before = {d: snapshot(d) for d in shards}
    code, printed = harness("merge", str(base / "merged"), *map(str, shards))
    assert code == 0 and "merged 8 cells (0 failed) from 3 run directories" in printed
    assert {d: snapshot(d) for d in shards} == before  # the inputs are untouched, byte for byte
    return {"single": base / "single", "merged": base / "merged", **{f"shard{i}": d for i, d in enumerate(shards)}}


def rows_of(run_dir: Path) -> dict[str, dict]:
    store = ResultsStore(run_dir, create=False)
    try:
        return {r["cell_key"]: r for r in store.rows()}
    finally:
        store.close()


def markdown_tables(text: str) -> dict[tuple[str, int], list[list[str]]]:
    """Every Markdown table of a report by (heading above it, index under that heading), without the
    tables, columns and rows of time measurements."""
    tables: dict[tuple[str, int], list[list[str]]] = {}
    heading, count, current = "", 0, None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            if line.startswith("#"):
                heading, count = line.lstrip("#").strip(), 0
            continue
        if current is None:
            current = tables.setdefault((heading, count), [])
            count += 1
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not all(set(c) <= set("-: ") for c in cells):
            current.append(cells)
    kept = {}
    for (title, i), lines in tables.items():
        if TIMES.search(title) or not lines:
            continue
        columns = [j for j, name in enumerate(lines[0]) if not TIMES.search(name)]
        kept[(title, i)] = [[line[j] for j in columns] for line in lines if not TIMES.search(line[0])]
    return kept


def test_each_shard_runs_and_records_its_own_share(runs):
    single = rows_of(runs["single"])
    for i in range(SHARDS):
        rows = rows_of(runs[f"shard{i}"])
        assert set(rows) == {k for k in single if shard_index(k, SHARDS) == i}
        store = ResultsStore(runs[f"shard{i}"], create=False)
        assert store.meta()["config"]["shard"] == f"{i}/{SHARDS}"
        store.close()
        if rows:  # its report covers its own cells
            assert f"{len(rows)} cell(s) ok" in (runs[f"shard{i}"] / "report.md").read_text()


def test_sharded_then_merged_gives_the_single_runs_tables(runs):
    single = markdown_tables((runs["single"] / "report.md").read_text())
    merged = markdown_tables((runs["merged"] / "report.md").read_text())
    assert len(single) >= 10 and any("Test log-likelihood" in title for title, _ in single)
    assert merged == single
    assert set(rows_of(runs["merged"])) == set(rows_of(runs["single"]))


def test_merged_rows_remember_their_run_and_keep_their_identity(runs):
    single = rows_of(runs["single"])
    for key, row in rows_of(runs["merged"]).items():
        i = shard_index(key, SHARDS)
        assert row["info"][SOURCE_KEY] == {"dir": str(runs[f"shard{i}"].resolve()), "shard": f"{i}/{SHARDS}"}
        assert (row["method"], row["profile"], row["seed"]) == (
            single[key]["method"],
            single[key]["profile"],
            single[key]["seed"],
        )
        assert row["info"].get("variant") == single[key]["info"].get("variant")
        assert (runs["merged"] / ARTIFACT_DIR / f"{key}.npz").is_file()  # the figures' samples came along
    assert {r["method"] for r in single.values()} == {"gaussian", "kde[max_train=500]"}
    assert (runs["merged"] / "figures" / "fig_samples_2d.png").is_file()
    store = ResultsStore(runs["merged"], create=False)
    meta = store.meta()
    store.close()
    assert meta["config"]["shard"] is None
    assert [m["shard"] for m in meta["merged_from"]] == [f"{i}/{SHARDS}" for i in range(SHARDS)]


def test_merging_is_idempotent(runs, tmp_path):
    merged = rows_of(runs["merged"])
    shards = [runs[f"shard{i}"] for i in range(SHARDS)]
    merge_runs(tmp_path / "again", shards)
    merge_runs(tmp_path / "of-merged", [runs["merged"]])
    merge_runs(tmp_path / "with-a-shard", [runs["merged"], shards[1], shards[1]])
    for out in ("again", "of-merged", "with-a-shard"):
        assert rows_of(tmp_path / out) == merged, out


def test_running_another_share_into_a_shards_directory_exits_2(runs, capsys):
    for other in (["--shard", f"1/{SHARDS}"], []):
        assert main(["run", *GRID, *other, "--out", str(runs["shard0"])]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"holds shard 0/{SHARDS}" in err, err


# ------------------------------------------------------------------ merging synthetic stores


def row(key: str, **fields) -> dict:
    base = {
        "cell_key": key,
        "method": "gaussian",
        "dataset": "8gaussians",
        "seed": 0,
        "profile": "smoke",
        "params": {},
        "device": "cpu",
        "status": "ok",
        "error": None,
        "metrics": {"test_loglik": -3.0},
        "timings": {},
        "info": {},
        "code_version": "1.0+abc",
        "config_hash": "c1",
        "created_at": 100.0,
    }
    return {**base, **fields}


def store_with(run_dir: Path, *rows: dict, config: dict | None = None) -> Path:
    store = ResultsStore(run_dir)
    store.set_meta("config", config or {"methods": ["gaussian"], "datasets": ["8gaussians"], "seeds": [0]})
    for r in rows:
        store.put(r)
    store.close()
    return run_dir


def test_differing_duplicates_are_refused_unless_a_copy_is_preferred(tmp_path, capsys):
    a = store_with(tmp_path / "a", row("k1"), row("k2"))
    b = store_with(tmp_path / "b", row("k1", config_hash="c2", created_at=50.0, metrics={"test_loglik": -9.0}))
    c = store_with(tmp_path / "c", row("k2", code_version="1.0+def", created_at=200.0))
    assert main(["merge", str(tmp_path / "out"), str(a), str(b), str(c)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gaussian/8gaussians/seed 0" in err and "1 more cell" in err
    assert "--prefer" in err and not (tmp_path / "out").exists()
    merge_runs(tmp_path / "first", [a, b, c], prefer="first")
    assert {k: r["config_hash"] + r["code_version"] for k, r in rows_of(tmp_path / "first").items()} == {
        "k1": "c11.0+abc",
        "k2": "c11.0+abc",
    }
    merge_runs(tmp_path / "last", [a, b, c], prefer="last")
    assert rows_of(tmp_path / "last")["k1"]["metrics"]["test_loglik"] == -9.0
    assert rows_of(tmp_path / "last")["k2"]["code_version"] == "1.0+def"
    merge_runs(tmp_path / "newest", [a, b, c], prefer="newest")
    newest = rows_of(tmp_path / "newest")
    assert newest["k1"]["config_hash"] == "c1" and newest["k2"]["code_version"] == "1.0+def"


def test_agreeing_duplicates_keep_the_ok_copy(tmp_path):
    failed = store_with(tmp_path / "failed", row("k1", status="failed", error="boom", metrics={}))
    ok = store_with(tmp_path / "ok", row("k1", created_at=300.0))
    for order in ([failed, ok], [ok, failed]):
        out = tmp_path / f"out-{order[0].name}"
        summary = merge_runs(out, order)
        assert summary.agreed == 1 and rows_of(out)["k1"]["status"] == "ok"
        assert rows_of(out)["k1"]["info"][SOURCE_KEY]["dir"] == str(ok.resolve())


def test_profiles_and_variants_stay_apart(tmp_path):
    variant = {"variant": {"method": "kde", "params": {"max_train": 500}}}
    a = store_with(tmp_path / "a", row("k1", method="kde", profile="smoke"), row("k2", method="kde", profile="quick"))
    b = store_with(tmp_path / "b", row("k3", method="kde[max_train=500]", info=variant))
    merge_runs(tmp_path / "out", [a, b])
    rows = rows_of(tmp_path / "out")
    assert {(r["method"], r["profile"]) for r in rows.values()} == {
        ("kde", "smoke"),
        ("kde", "quick"),
        ("kde[max_train=500]", "smoke"),
    }
    assert rows["k3"]["info"]["variant"] == variant["variant"]


def test_configs_of_different_runs_are_joined(tmp_path):
    a = store_with(tmp_path / "a", row("k1"), config={"methods": ["gaussian"], "datasets": ["rings"], "seeds": [1]})
    b = store_with(tmp_path / "b", row("k2"), config={"methods": ["kde"], "datasets": ["rings"], "seeds": [0]})
    merge_runs(tmp_path / "out", [a, b])
    store = ResultsStore(tmp_path / "out", create=False)
    config = store.meta()["config"]
    store.close()
    assert (config["methods"], config["datasets"], config["seeds"]) == (["gaussian", "kde"], ["rings"], [0, 1])


def test_a_store_from_an_older_schema_merges_with_its_missing_columns_empty(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    conn = sqlite3.connect(old / DB_NAME)
    conn.execute(
        "CREATE TABLE results (cell_key TEXT PRIMARY KEY, method TEXT, dataset TEXT, seed INTEGER, "
        "profile TEXT, status TEXT, metrics TEXT)"
    )
    conn.execute("INSERT INTO results VALUES ('k1', 'kde', 'rings', 0, 'quick', 'ok', '{\"kl\": 0.5}')")
    conn.commit()
    conn.close()
    merge_runs(tmp_path / "out", [old])
    merged = rows_of(tmp_path / "out")["k1"]
    assert merged["metrics"] == {"kl": 0.5} and merged["code_version"] is None and merged["params"] == {}


def write_foreign_table(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE photos (id INTEGER, name TEXT)")
    conn.commit()
    conn.close()


def write_short_table(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE results (cell_key TEXT, method TEXT)")
    conn.commit()
    conn.close()


def write_newer_table(db: Path) -> None:
    store_with(db.parent, row("k1"))
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE results ADD COLUMN telemetry TEXT")
    conn.commit()
    conn.close()


def write_bad_json(db: Path) -> None:
    store_with(db.parent, row("k1"))
    conn = sqlite3.connect(db)
    conn.execute("UPDATE results SET metrics = '{not json'")
    conn.commit()
    conn.close()


def write_damaged(db: Path) -> None:
    """A real store whose middle pages are overwritten with garbage."""
    store_with(db.parent, *(row(f"k{i}", error="x" * 3000) for i in range(40)))
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.seek(size // 3)
        f.write(os.urandom(size // 3))


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda db: db.write_text("method,dataset\nkde,rings\n"), "not an SQLite database"),
        (write_foreign_table, "holds no densitybench results table (tables: photos)"),
        (write_short_table, "lacks the column(s) dataset, seed, profile, status"),
        (write_newer_table, "newer densitybench"),
        (write_bad_json, "is damaged: cell k1's metrics is not valid JSON"),
        (write_damaged, "--salvage"),
    ],
)
def test_foreign_and_damaged_inputs_exit_2_with_one_line(tmp_path, capsys, make, words):
    good = store_with(tmp_path / "good", row("k0"))
    bad = tmp_path / "bad"
    bad.mkdir()
    make(bad / DB_NAME)
    before = snapshot(bad)
    assert main(["merge", str(tmp_path / "out"), str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "out").exists() and snapshot(bad) == before


def test_bad_outputs_and_inputs_exit_2_with_one_line(tmp_path, capsys):
    good = store_with(tmp_path / "good", row("k0"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "out"), str(tmp_path / "missing")], "is not a directory"),
        ([str(tmp_path / "out"), str(tmp_path / "empty")], "is not a run directory"),
        ([str(good), str(good)], "is also an input"),
        ([str(tmp_path / "full"), str(good)], "is not empty"),
    ]
    for argv, words in cases:
        assert main(["merge", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    assert main(["merge", str(tmp_path / "empty"), str(good)]) == 0  # an empty directory is a new one
    assert set(rows_of(tmp_path / "empty")) == {"k0"}


def test_a_run_still_writing_is_not_merged(tmp_path):
    running = store_with(tmp_path / "running", row("k0"))
    fd = os.open(running / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="still writing"):
            merge_runs(tmp_path / "out", [running])
    finally:
        os.close(fd)
    merge_runs(tmp_path / "out", [running])  # once it has ended
    assert not (tmp_path / "out" / ARTIFACT_DIR).exists()  # no artefacts to carry: none made


def test_a_failed_write_leaves_no_half_merged_output(tmp_path, monkeypatch):
    a = store_with(tmp_path / "a", row("k0"))
    (a / ARTIFACT_DIR).mkdir()
    (a / ARTIFACT_DIR / "k0.npz").write_bytes(b"npz")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", disk_full)
    with pytest.raises(OSError):
        merge_runs(tmp_path / "out", [a])
    assert not (tmp_path / "out").exists()
