"""Resumable, checksum-verified downloads for the dataset plugins' ``fetch``.

Downloads go to ``<file>.part`` and resume from its size (an HTTP Range
request; ``file://`` URLs seek) when run again after an interruption. A
checksum mismatch deletes the bad file and raises a UserError naming the file
and both checksums.
"""

from __future__ import annotations

import hashlib
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlparse

from harness.errors import UserError

CHUNK = 1 << 20
TIMEOUT_S = 60


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
        log(progress, f"{dest} is present")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _transfer(url, part, progress=progress, label=dest.name)
    actual = sha256_of(part)
    if sha256 is None:
        warnings.warn(
            f"{dest.name}: no checksum is recorded, so the download is not verified (its sha256 is {actual})",
            stacklevel=2,
        )
    elif actual != sha256:
        part.unlink()
        raise UserError(
            f"checksum mismatch for {dest.name} from {url}: expected sha256 {sha256}, "
            f"got {actual}; the bad file was deleted, run the fetch again"
        )
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

    bar = tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        disable=not progress,
        file=sys.stderr,
        leave=False,
    )
    try:
        with stream, part.open("ab" if offset else "wb") as out, bar:
            for block in iter(lambda: stream.read(CHUNK), b""):
                out.write(block)
                bar.update(len(block))
    except (urllib.error.URLError, OSError) as e:
        kept = part.stat().st_size if part.exists() else 0
        raise UserError(
            f"download of {url} broke off ({_reason(e)}); {part} keeps {kept} bytes: run the fetch again to resume"
        ) from None


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


def log(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr)
