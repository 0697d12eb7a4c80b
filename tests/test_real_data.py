"""Real data: the shared copy (miniboone-small, UCI), user files, cleaning, downloads.

Tests that read ``../shared/data`` take the ``shared_data_root`` fixture (skipped
when the folder is absent, failing under CI=true). Downloads are exercised
offline with ``file://`` URLs and a local HTTP server that honours Range.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

import datasets
from datasets import maf, uci
from datasets._download import download, sha256_of
from datasets.tabular import FileDataset, clean_table, read_table, split_sizes
from harness.download import fetch
from harness.errors import UserError

# ---------------------------------------------------------------- shared real data


def test_shared_files_match_the_recorded_checksums(shared_data_root):
    listed = {}
    for line in (shared_data_root / "SHA256SUMS").read_text().splitlines():
        sha, name = line.split()
        listed[name.removeprefix("./")] = sha
    recorded = {f"uci/{k}/data.txt": v for k, v in uci.UCI_SHA256.items()} | maf.MAF_SPLITS_SHA256
    assert recorded == listed
    for name, sha in recorded.items():
        assert sha256_of(shared_data_root / name) == sha, name


def test_miniboone_small_shapes_and_maf_normalisation(shared_data_root):
    val_raw = np.load(shared_data_root / "maf-splits/miniboone/val.npy")
    test_raw = np.load(shared_data_root / "maf-splits/miniboone/test.npy")
    assert val_raw.shape == (3284, 43) and test_raw.shape == (3648, 43)
    for rows in (val_raw, test_raw):
        # normalised with MAF's train+validation statistics: close to, not exactly, 0 and 1
        # (measured: |mean| <= 0.063, std in [0.88, 1.09]; raw MINIBOONE spans thousands)
        assert np.abs(rows.mean(0)).max() < 0.1
        assert 0.8 < rows.std(0).min() and rows.std(0).max() < 1.2
        assert np.abs(rows.mean(0)).max() > 1e-3  # not re-standardised on its own rows
    splits = datasets.get("miniboone-small").load(seed=0, root=shared_data_root)
    assert splits.sizes() == (2956, 328, 3648) and splits.dim == 43
    assert np.array_equal(splits.test, test_raw)
    pooled = np.vstack((splits.train, splits.val))
    assert np.array_equal(pooled[np.lexsort(pooled.T)], val_raw[np.lexsort(val_raw.T)])
    other = datasets.get("miniboone-small").load(seed=1, root=shared_data_root)
    assert not np.array_equal(other.val, splits.val)


@pytest.mark.parametrize("name", uci.UCI_NAMES)
def test_uci_set_loads_cleaned_and_standardised(shared_data_root, name):
    ds = datasets.get(name)
    documented_dim = type(ds).dim
    splits = ds.load(seed=0, root=shared_data_root)
    assert splits.dim == documented_dim == ds.dim
    assert splits.sizes() == ds.sizes() == split_sizes(type(ds).rows)
    for part in (splits.train, splits.val, splits.test):
        assert np.isfinite(part).all() and part.dtype == np.float64
        assert (part.std(0) > 0).all()  # no constant column in any split
    assert np.abs(splits.train.mean(0)).max() < 1e-9
    assert np.allclose(splits.train.std(0), 1, atol=1e-9)
    again = ds.load(seed=0, root=shared_data_root)
    assert np.array_equal(again.train, splits.train)


def test_uci_cleaning_drops_naval_constants_and_dequantises_discrete_columns(shared_data_root):
    naval = datasets.get("naval-propulsion-plant")
    naval.load(seed=0, root=shared_data_root)
    assert naval.cleaning_.dropped == (8, 11)
    wine = datasets.get("wine-quality-red")
    wine.load(seed=0, root=shared_data_root)
    assert wine.cleaning_.quanta[11] == 1.0  # the quality score, an integer
    kin8nm = datasets.get("kin8nm")
    kin8nm.load(seed=0, root=shared_data_root)
    assert kin8nm.cleaning_.dropped == () and kin8nm.cleaning_.quanta == {}  # continuous


def test_fetch_uci_from_a_file_mirror_of_the_shared_copy(shared_data_root, tmp_path):
    mirror = tmp_path / "mirror"
    for name in uci.UCI_NAMES:
        (mirror / name / "data").mkdir(parents=True)
        (mirror / name / "data" / "data.txt").symlink_to(shared_data_root / "uci" / name / "data.txt")
    root = tmp_path / "root"
    paths = fetch("uci", root, progress=False, url=mirror.as_uri())
    assert paths == [root / "uci" / n / "data.txt" for n in uci.UCI_SHA256]
    assert datasets.get("yacht").load(seed=0, root=root).sizes() == (248, 30, 30)


def test_missing_uci_file_names_the_fetch_command(tmp_path):
    ok, reason = datasets.get("concrete").available(tmp_path)
    assert not ok and "python -m harness data fetch uci" in reason and str(tmp_path) in reason
    with pytest.raises(datasets.DataUnavailable, match="data fetch uci"):
        datasets.get("concrete").load(root=tmp_path)


# ---------------------------------------------------------------- cleaning


def mixed_table(n: int = 400) -> np.ndarray:
    """Columns: continuous, constant, integer counts, a 0.5 grid, continuous."""
    rng = np.random.default_rng(0)
    return np.column_stack(
        (
            rng.standard_normal(n),
            np.full(n, 3.0),
            rng.integers(0, 5, n).astype(float),
            0.5 * rng.integers(0, 40, n),
            rng.standard_normal(n) * 10 + 2,
        )
    )


def test_clean_table_drops_constants_and_dequantises_by_one_quantum():
    x = mixed_table()
    splits, cleaning = clean_table(x, seed=3, standardize=False)
    assert cleaning.dropped == (1,) and cleaning.kept == (0, 2, 3, 4)
    assert cleaning.quanta == {2: 1.0, 3: 0.5}
    out = np.vstack((splits.train, splits.val, splits.test))
    for j_out, j_in, q in ((1, 2, 1.0), (2, 3, 0.5)):
        restored = np.floor(out[:, j_out] / q) * q  # the noise stays within one quantum
        assert np.array_equal(np.sort(restored), np.sort(x[:, j_in]))
        assert not np.isin(out[:, j_out], x[:, j_in]).any()
    assert np.array_equal(np.sort(out[:, 0]), np.sort(x[:, 0]))  # continuous: untouched


def test_clean_table_split_is_seeded_and_standardised_with_training_statistics():
    x = mixed_table()
    a, cleaning = clean_table(x, seed=1)
    b, _ = clean_table(x, seed=1)
    c, _ = clean_table(x, seed=2)
    assert a.sizes() == split_sizes(400) == (320, 40, 40)
    assert np.array_equal(a.train, b.train) and not np.array_equal(a.train, c.train)
    assert np.allclose(a.train.mean(0), 0) and np.allclose(a.train.std(0), 1)
    assert np.abs(a.val.mean(0)).max() > 1e-6
    assert np.allclose(a.test * cleaning.std + cleaning.mean, clean_table(x, seed=1, standardize=False)[0].test)


def test_clean_table_refuses_a_table_left_with_one_column():
    x = np.column_stack((np.arange(20.0), np.ones(20)))
    with pytest.raises(UserError, match="only 1 non-constant column"):
        clean_table(x, seed=0)


# ---------------------------------------------------------------- user files


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def table_text(rows: np.ndarray, sep: str) -> str:
    return "".join(sep.join(repr(float(v)) for v in row) + "\n" for row in rows)


def test_csv_with_header_csv_without_whitespace_text_and_npy_agree(tmp_path):
    x = mixed_table(50)
    files = [
        write(tmp_path / "h.csv", "a,b,c,d,e\n" + table_text(x, ",")),
        write(tmp_path / "plain.csv", table_text(x, ",")),
        write(tmp_path / "w.txt", "\n" + table_text(x, " \t ").replace("\n", "  \n") + "\n\n"),
    ]
    np.save(tmp_path / "t.npy", x)
    files.append(tmp_path / "t.npy")
    for path in files:
        assert np.array_equal(read_table(path), x), path.name
    loads = [datasets.get(f"file:{p}").load(seed=5) for p in files]
    for splits in loads[1:]:
        assert np.array_equal(splits.train, loads[0].train)
    ds = datasets.get(f"file:{files[0]}")
    assert ds.dim == 4 and ds.sizes() == (40, 5, 5)
    ds.load(seed=0)
    assert ds.cleaning_.dropped == (1,)


def test_a_first_line_with_any_non_number_is_a_header(tmp_path):
    x = mixed_table(12)
    assert np.array_equal(read_table(write(tmp_path / "t.csv", "x,1,2,3,\n" + table_text(x, ","))), x)
    assert np.array_equal(read_table(write(tmp_path / "t.txt", "t 1 2 3 4\n" + table_text(x, " "))), x)


def test_comma_in_a_txt_file_is_read_as_csv(tmp_path):
    x = mixed_table(12)
    assert np.array_equal(read_table(write(tmp_path / "t.txt", table_text(x, ", "))), x)


GOOD = [f"{i},{i * 2 + 0.5},{i % 3}\n" for i in range(12)]
GOOD_ROWS = "".join(GOOD)


@pytest.mark.parametrize(
    "name, text, message",
    [
        (
            "bad.csv",
            "x,y,z\n" + "".join(GOOD[:5]) + "1,2,abc\n" + "".join(GOOD[5:]),
            r"line 7, column 3: 'abc' is not a number",
        ),
        ("ragged.csv", GOOD_ROWS + "1,2\n", r"line 13 has 2 columns, expected 3 \(as on line 1\)"),
        ("ragged.txt", "1 2 3\n" * 5 + "1 2 3 4\n" + "1 2 3\n" * 6, r"line 6 has 4 columns, expected 3"),
        ("nan.csv", GOOD_ROWS + "1,nan,2\n", r"line 13, column 2: 'nan' is not finite"),
        ("inf.txt", "1 2\n" * 10 + "3 -inf\n", r"line 11, column 2: '-inf' is not finite"),
        ("empty_cell.csv", GOOD_ROWS + "1,,2\n", r"line 13, column 2: is empty"),
        ("few.csv", "".join(GOOD[:4]), r"only 4 rows; at least 10 are needed"),
        ("single.csv", "v\n" + "\n".join(str(i) for i in range(20)) + "\n", r"a single column"),
        ("empty.csv", "", r"the file is empty"),
        ("blank.txt", "\n  \n\t\n", r"the file is empty"),
        ("header_only.csv", "a,b,c\n", r"no data rows"),
    ],
)
def test_malformed_user_files_give_one_line_errors(tmp_path, name, text, message):
    path = write(tmp_path / name, text)
    with pytest.raises(UserError, match=message) as info:
        datasets.get(f"file:{path}").load(seed=0)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_bad_line_number_is_the_physical_line(tmp_path):
    path = write(tmp_path / "b.csv", "a,b\n\n1,2\n3,4\n\n5,x\n")
    with pytest.raises(UserError, match=r"line 6, column 2: 'x' is not a number"):
        read_table(path)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.array([[1.0, np.nan]] * 12), r"row 1, column 2: nan is not finite"),
        (np.zeros((12, 2, 2)), r"2-D"),
        (np.arange(12.0), r"a single column"),
        (np.array([["a", "b"]] * 12), r"numeric"),
    ],
)
def test_malformed_npy_files(tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(UserError, match=message):
        read_table(tmp_path / "x.npy")


def test_missing_user_file_is_a_user_error_at_get(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        datasets.get(f"file:{tmp_path / 'nope.csv'}")
    with pytest.raises(UserError, match="not a file"):
        read_table(tmp_path)


def test_file_dataset_options_turn_cleaning_steps_off(tmp_path):
    x = mixed_table(30)
    np.save(tmp_path / "t.npy", x)
    raw = FileDataset(str(tmp_path / "t.npy"), drop_constant=False, dequantize=False, standardize=False)
    assert raw.dim == 5
    splits = raw.load(seed=0)
    pooled = np.vstack((splits.train, splits.val, splits.test))
    assert np.array_equal(pooled[np.lexsort(pooled.T)], x[np.lexsort(x.T)])


# ---------------------------------------------------------------- downloads


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PAYLOAD = bytes(range(256)) * 400  # 100 KiB


def test_download_lands_a_good_file_and_keeps_it(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "data.txt"
    assert download(src.as_uri(), dest, sha256=sha(PAYLOAD), progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and not dest.with_name("data.txt.part").exists()
    src.unlink()  # present with the right checksum: not fetched again
    assert download(src.as_uri(), dest, sha256=sha(PAYLOAD), progress=False) == dest


def test_download_with_a_wrong_checksum_raises_and_deletes(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD[:-1] + b"X")
    dest = tmp_path / "data.txt"
    with pytest.raises(UserError) as info:
        download(src.as_uri(), dest, sha256=sha(PAYLOAD), progress=False)
    text = str(info.value)
    assert "data.txt" in text and sha(PAYLOAD) in text and sha(src.read_bytes()) in text
    assert not dest.exists() and not dest.with_name("data.txt.part").exists()


def test_download_resumes_a_partial_file_over_file_urls(tmp_path):
    half = len(PAYLOAD) // 2
    src = tmp_path / "src.bin"
    src.write_bytes(b"\0" * half + PAYLOAD[half:])  # a restart would take these zeros
    dest = tmp_path / "data.txt"
    dest.with_name("data.txt.part").write_bytes(PAYLOAD[:half])
    download(src.as_uri(), dest, sha256=sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


class RangeServer:
    """A local HTTP server for one payload; honours Range unless told not to."""

    def __init__(self, payload: bytes, honour_range: bool = True):
        self.ranges: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requested = self.headers.get("Range")
                server.ranges.append(requested)
                start = int(requested.split("=")[1].rstrip("-")) if requested and honour_range else 0
                if start >= len(payload) and requested:
                    self.send_response(416)
                    self.end_headers()
                    return
                body = payload[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data.txt"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("honour_range", [True, False], ids=["range", "server-ignores-range"])
def test_download_resumes_over_http_with_a_range_request(tmp_path, honour_range):
    half = len(PAYLOAD) // 3
    dest = tmp_path / "data.txt"
    dest.with_name("data.txt.part").write_bytes(PAYLOAD[:half])
    with RangeServer(PAYLOAD, honour_range) as server:
        download(server.url, dest, sha256=sha(PAYLOAD), progress=False)
    assert server.ranges == [f"bytes={half}-"]
    assert dest.read_bytes() == PAYLOAD


def test_download_of_a_complete_part_file_verifies_it(tmp_path):
    dest = tmp_path / "data.txt"
    dest.with_name("data.txt.part").write_bytes(PAYLOAD)
    with RangeServer(PAYLOAD) as server:
        download(server.url, dest, sha256=sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_unreachable_source_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot download"):
        download((tmp_path / "absent.bin").as_uri(), tmp_path / "x", sha256=None, progress=False)
    with pytest.raises(UserError, match="unknown data family 'mnist'"):
        fetch("mnist", tmp_path)


def test_fetch_uci_verifies_every_file_against_its_recorded_checksum(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    sums = {}
    for i, name in enumerate(["yacht", "energy"]):
        body = table_text(np.arange(30.0).reshape(10, 3) + i, " ").encode()
        (mirror / name / "data").mkdir(parents=True)
        (mirror / name / "data" / "data.txt").write_bytes(body)
        sums[name] = sha(body)
    monkeypatch.setattr(uci, "UCI_SHA256", sums)
    monkeypatch.setenv(uci.ENV_UCI_URL, mirror.as_uri())
    paths = fetch("uci", tmp_path / "root", progress=False)
    assert [p.read_bytes() for p in paths] == [(mirror / n / "data" / "data.txt").read_bytes() for n in sums]
    monkeypatch.setattr(uci, "UCI_SHA256", {"yacht": sums["energy"]})
    (tmp_path / "root" / "uci" / "yacht" / "data.txt").unlink()
    with pytest.raises(UserError, match="checksum mismatch for data.txt"):
        fetch("uci", tmp_path / "root", progress=False)


def maf_bundle(path: Path) -> dict[str, bytes]:
    """A small stand-in for the MAF bundle: its folder layout with tiny files."""
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).standard_normal((100, 4)))
    files = {
        "data/power/data.npy": b"power",
        "data/gas/ethylene_CO.pickle": b"gas",
        "data/gas/ethylene_methane.pickle": b"unused",
        "data/hepmass/1000_train.csv": b"train",
        "data/hepmass/1000_test.csv": b"test",
        "data/miniboone/data.npy": buffer.getvalue(),
        "data/BSDS300/BSDS300.hdf5": b"bsds",
        "data/mnist/mnist.pkl.gz": b"skip me",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return files


def test_fetch_maf_extracts_the_bundle_into_the_layout_and_derives_miniboone_splits(tmp_path):
    archive = tmp_path / "data.tar.gz"
    files = maf_bundle(archive)
    root = tmp_path / "root"
    with pytest.warns(UserWarning, match="no checksum is recorded"):
        paths = fetch("maf", root, progress=False, url=archive.as_uri())
    assert (root / "maf/hepmass/1000_test.csv").read_bytes() == b"test"
    assert (root / "maf/BSDS300/BSDS300.hdf5").read_bytes() == b"bsds"
    assert not (root / "maf/mnist").exists() and not (root / "maf/gas/ethylene_methane.pickle").exists()
    assert not (root / "maf/data.tar.gz").exists()
    assert set(paths) >= {root / "maf/power/data.npy", root / "maf-splits/miniboone/val.npy"}
    maf.clear_cache()
    small = datasets.get("miniboone-small").load(seed=0, root=root)
    assert np.array_equal(small.test, datasets.get("miniboone").load(root=root).test)
    assert files["data/power/data.npy"] == (root / "maf/power/data.npy").read_bytes()


def test_fetch_maf_with_a_recorded_checksum_rejects_a_corrupt_archive(tmp_path, monkeypatch):
    archive = tmp_path / "data.tar.gz"
    maf_bundle(archive)
    monkeypatch.setattr(maf, "MAF_SHA256", "0" * 64)
    with pytest.raises(UserError, match="checksum mismatch for data.tar.gz"):
        fetch("maf", tmp_path / "root", progress=False, url=archive.as_uri())
    assert not (tmp_path / "root" / "maf" / "data.tar.gz").exists()
    monkeypatch.setattr(maf, "MAF_SHA256", sha256_of(archive))
    fetch("maf", tmp_path / "root", progress=False, url=archive.as_uri())
    assert (tmp_path / "root" / "maf" / "power" / "data.npy").is_file()


def test_fetch_maf_reports_an_archive_lacking_files(tmp_path):
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("data/power/data.npy")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.warns(UserWarning), pytest.raises(UserError, match="lacks gas/ethylene_CO.pickle"):
        fetch("maf", tmp_path / "root", progress=False, url=archive.as_uri())
