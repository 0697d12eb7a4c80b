"""Opening files a user names (data, configs, databases): the one check before any read.

``regular_file`` refuses what is not a regular file (a FIFO would block the reader, a device never
ends) and what is larger than the reader can hold; ``read_utf8`` reads a small text file as UTF-8
whatever the locale; ``sha256_of`` streams a file's content hash. Every refusal is a one-line
``UserError`` naming the file.

Example::

    text = read_utf8(regular_file("run.toml", "config file", max_bytes=MAX_CONFIG_BYTES), "config file")
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from harness.errors import UserError

#: Largest config file read (a benchmark config is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20
_KINDS = {
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def regular_file(path: str | Path, what: str, *, max_bytes: int | None = None) -> Path:
    """``path`` when it is a regular file (after symbolic links) of at most ``max_bytes`` bytes.

    ``what`` names the file in the error ("config file", "data file", ...).
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found (no such file)") from None
    except (OSError, ValueError) as e:  # permission, a name too long, an embedded NUL
        raise UserError(f"{what} {path} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS.items() if test(info.st_mode)), "a special file")
        raise UserError(f"{what} {path} is {kind}, not a file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise UserError(f"{what} {path} holds {info.st_size:,} bytes; at most {max_bytes:,} are read")
    return path


def read_utf8(path: Path, what: str, *, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of the regular file ``path`` (checked by ``regular_file``), decoded as UTF-8 (a BOM is
    dropped); a file that grew past ``max_bytes`` or is not UTF-8 is refused with the byte offset."""
    path = regular_file(path, what, max_bytes=max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # swapped for a FIFO since stat: no wait
        with os.fdopen(fd, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise UserError(f"{what} {path} holds more than {max_bytes:,} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{what} {path}: line {line} (byte {e.start + 1}) is not UTF-8 text") from None


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of the file's content (hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
