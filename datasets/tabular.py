"""Tables of real data: reading (CSV, whitespace text, ``.npy``), cleaning, and a user-file loader.

``clean_table`` drops constant columns, dequantises discrete ones, splits with a
seed (80/10/10) and standardises with training statistics; the rules are in
docs/datasets.md. Malformed input raises ``UserError`` naming the file and line; a
file is checked for being a regular file of plausible size and shape before it is read
(``harness.toolkit.files``), and a table that cannot be fitted (fewer than two varying
columns) is refused naming the reason.

Example::

    ds = datasets.get("file:/data/measurements.csv")
    splits = ds.load(seed=0)     # Splits(train (0.8 n, d), val, test), standardised
    ds.cleaning_.dropped         # original indices of the constant columns
"""

from __future__ import annotations

import codecs
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from datasets.base import Dataset, Splits
from harness.errors import UserError
from harness.toolkit.files import regular_file, sha256_of

#: A column with at most this fraction of n distinct values counts as discrete.
DISCRETE_MAX_UNIQUE_FRACTION = 0.5
#: Fewest rows a table may have (a 10 % test split needs at least one row).
MIN_ROWS = 10
#: Fewest columns a table may have, before and after cleaning.
MIN_COLUMNS = 2
#: Suffixes read as comma-separated; others are sniffed (a comma on the first line).
CSV_SUFFIXES = (".csv",)
#: Longest line of a text table (bytes): about a million columns; longer is not a table.
MAX_LINE_BYTES = 1 << 24
#: Columns whose largest magnitude lies outside [2^-SAFE_EXPONENT, 2^SAFE_EXPONENT] are scaled by a
#: power of two (exact) before their statistics are computed, so squares neither overflow nor underflow.
SAFE_EXPONENT = 400


@dataclass
class Cleaning:
    """What ``clean_table`` did, in terms of the input's column indices.

    ``kept``: indices of the columns kept (in output order); ``dropped``: the
    constant ones; ``quanta``: discrete column -> noise width added; ``mean``
    and ``std`` (d,): the training statistics used to standardise (zeros and
    ones when standardisation is off).
    """

    kept: tuple[int, ...]
    dropped: tuple[int, ...]
    quanta: dict[int, float] = field(default_factory=dict)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None


# ---------------------------------------------------------------- reading


def read_table(path: str | Path) -> np.ndarray:
    """The table in ``path`` as an (n, d) float64 array, checked for shape and finiteness.

    ``.npy`` files are memory-mapped after their header is checked against the file's size (no
    pickles); anything else is text: comma separated when the suffix is ``.csv`` or the first
    non-blank line holds a comma, else whitespace separated. The first non-blank line is a header
    when any of its cells is not a number. Blank lines are skipped. Anything but a regular file is
    refused before it is opened.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file")
    regular_file(path, "data file")
    try:
        x = _read_npy(path) if path.suffix.lower() == ".npy" else _read_text(path)
    except MemoryError:
        raise UserError(f"{path}: the table does not fit in memory") from None
    check_table_shape(x, str(path))
    return x


def check_table_shape(x: np.ndarray, source: str) -> None:
    """Raise a UserError unless ``x`` has at least MIN_ROWS rows and MIN_COLUMNS columns."""
    if x.shape[0] == 0:
        raise UserError(f"{source}: no data rows")
    if x.shape[1] < MIN_COLUMNS:
        raise UserError(f"{source}: a single column; a density needs at least {MIN_COLUMNS} columns")
    if x.shape[0] < MIN_ROWS:
        raise UserError(f"{source}: only {x.shape[0]} rows; at least {MIN_ROWS} are needed")


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """(shape, dtype, bytes of the header) of a .npy file of format 1.0 or 2.0, read without the data;
    None for other versions (``np.load`` checks those). A header that is not .npy is a UserError."""
    import numpy.lib.format as npy_format

    with path.open("rb") as f:
        if f.read(2) == b"PK":
            raise UserError(f"{path}: a .npz (zip) archive, not a .npy array (save one array with numpy.save)")
        f.seek(0)
        try:
            version = npy_format.read_magic(f)
            reader = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
            if version not in reader:
                return None
            shape, _, dtype = reader[version](f)
        except ValueError as e:
            raise UserError(f"{path}: not a .npy array ({e})") from None
        return shape, dtype, f.tell()


def _read_npy(path: Path) -> np.ndarray:
    header = npy_header(path)
    if header is not None:
        shape, dtype, offset = header
        need = offset + dtype.itemsize * math.prod(shape)
        size = path.stat().st_size
        if need > size:
            raise UserError(
                f"{path}: its header claims an array of shape {shape} ({need:,} bytes) but the file holds "
                f"{size:,} bytes"
            )
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise UserError(f"{path}: not a plain numeric .npy array ({e})") from None
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: not a valid .npy file ({e})") from None
    if not isinstance(x, np.ndarray):
        raise UserError(f"{path}: a .npz (zip) archive, not a .npy array (save one array with numpy.save)")
    if x.dtype.kind not in "biuf":
        raise UserError(f"{path}: array of dtype {x.dtype}; a numeric array is needed")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise UserError(f"{path}: array of shape {x.shape}; a 2-D (rows, columns) array is needed")
    x = np.array(x, dtype=np.float64)  # a copy in memory: the file may change after it is read
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        r, c = bad[0]
        raise UserError(f"{path}: row {r + 1}, column {c + 1}: {x[r, c]} is not finite (NaN and inf are not allowed)")
    return x


def check_utf8(path: Path, chunk: int = 1 << 20) -> None:
    """Raise a UserError naming the line and byte of the first invalid UTF-8 sequence, NUL byte, or
    line longer than ``MAX_LINE_BYTES`` in the whole file (read in chunks: constant memory)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = newlines = 0
    line_bytes = 0  # bytes of the current line read so far
    with path.open("rb") as f:
        while True:
            block = f.read(chunk)
            pending = len(decoder.getstate()[0])  # bytes of a sequence begun in the previous block
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                at = e.start - pending  # in this block (negative: in the pending bytes, which hold no newline)
                line = newlines + block[: max(at, 0)].count(b"\n") + 1
                raise UserError(
                    f"{path}: line {line} (byte {offset + at + 1}) is not UTF-8 text "
                    "(save the file as UTF-8, or use .npy)"
                ) from None
            if not block:
                return
            nul = block.find(b"\0")
            if nul >= 0:
                line = newlines + block[:nul].count(b"\n") + 1
                raise UserError(f"{path}: line {line} (byte {offset + nul + 1}) is a NUL byte: not a text table")
            ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
            lengths = np.diff(ends, prepend=-1 - line_bytes) - 1  # bytes of each line ending in this block
            long = np.flatnonzero(lengths > MAX_LINE_BYTES)
            line_bytes = len(block) - 1 - int(ends[-1]) if len(ends) else line_bytes + len(block)
            if len(long) or line_bytes > MAX_LINE_BYTES:
                line = newlines + (int(long[0]) if len(long) else len(ends)) + 1
                raise UserError(f"{path}: line {line} is longer than {MAX_LINE_BYTES:,} bytes: not a text table")
            newlines += len(ends)
            offset += len(block)


def _first_line(path: Path) -> tuple[int, str]:
    """(1-based number, text) of the first non-blank line, or (0, "") for an empty file."""
    try:
        with path.open(encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    return number, line
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file (use CSV, whitespace-separated text or .npy)") from None
    return 0, ""


def _split_cells(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return [cell.strip() for cell in line.rstrip("\r\n").split(delimiter)]


def _as_number(cell: str) -> float | None:
    """float(cell), or None when it is not a plain number (Python's '1_0' is refused)."""
    if not cell or "_" in cell:
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def _read_text(path: Path) -> np.ndarray:
    check_utf8(path)
    first_number, first = _first_line(path)
    if first_number == 0:
        raise UserError(f"{path}: the file is empty")
    delimiter = "," if path.suffix.lower() in CSV_SUFFIXES or "," in first else None
    has_header = any(_as_number(c) is None for c in _split_cells(first, delimiter))
    skip = first_number if has_header else first_number - 1
    try:  # fast path (C parser); the scan below is authoritative and names the bad line
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            x = np.loadtxt(
                path, delimiter=delimiter, skiprows=skip, dtype=np.float64, ndmin=2, comments=None, encoding="utf-8-sig"
            )
        if np.isfinite(x).all() and x.size:
            return x
    except ValueError:
        pass
    return _scan_text(path, delimiter, skip)


def _scan_text(path: Path, delimiter: str | None, skip: int) -> np.ndarray:
    """Parse line by line; raise a UserError at the first malformed line."""
    rows: list[list[float]] = []
    width = first_row_line = 0
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            if number <= skip or not line.strip():
                continue
            cells = _split_cells(line, delimiter)
            if not width:
                width, first_row_line = len(cells), number
            elif len(cells) != width:
                raise UserError(
                    f"{path}: line {number} has {len(cells)} columns, expected {width} (as on line {first_row_line})"
                )
            rows.append([_parse_cell(path, number, j, cell) for j, cell in enumerate(cells, start=1)])
    return np.array(rows, dtype=np.float64).reshape(len(rows), width)


def _parse_cell(path: Path, line: int, column: int, cell: str) -> float:
    value = _as_number(cell)
    if value is None:
        problem = "is empty" if not cell else f"'{cell}' is not a number"
        raise UserError(f"{path}: line {line}, column {column}: {problem}")
    if not np.isfinite(value):
        raise UserError(f"{path}: line {line}, column {column}: '{cell}' is not finite (NaN and inf are not allowed)")
    return value


# ---------------------------------------------------------------- cleaning


def split_sizes(n: int) -> tuple[int, int, int]:
    """(train, val, test) row counts of ``clean_table``'s split: n // 10 each for val and test."""
    return n - 2 * (n // 10), n // 10, n // 10


def constant_columns(x: np.ndarray) -> np.ndarray:
    """Boolean mask (d,) of the columns of ``x`` (n, d) holding a single value."""
    return (x == x[:1]).all(axis=0)


def column_quantum(column: np.ndarray) -> float:
    """The smallest gap between distinct values of ``column`` (0.0 if it is constant)."""
    values = np.unique(column)
    return float(np.diff(values).min()) if len(values) > 1 else 0.0


def is_discrete(column: np.ndarray) -> bool:
    """True when ``column`` is integer-valued or has at most n/2 distinct values."""
    n_unique = len(np.unique(column))
    return bool(np.all(column == np.round(column)) or n_unique <= DISCRETE_MAX_UNIQUE_FRACTION * len(column))


def discrete_quanta(x: np.ndarray) -> dict[int, float]:
    """Column index -> quantum, for every non-constant discrete column of ``x`` (n, d)."""
    quanta = {}
    for j in range(x.shape[1]):
        if is_discrete(x[:, j]):
            q = column_quantum(x[:, j])
            if q > 0:
                quanta[j] = q
    return quanta


def check_varying_columns(kept: np.ndarray, width: int, source: str) -> None:
    """Raise a UserError unless at least MIN_COLUMNS of the ``width`` columns vary (``kept``: their indices)."""
    if len(kept) >= MIN_COLUMNS:
        return
    if len(kept) == 0:
        raise UserError(f"{source}: every column is constant (all rows are the same); there is no density to fit")
    raise UserError(
        f"{source}: only 1 non-constant column (column {kept[0] + 1}; the other {width - 1} hold a single value "
        f"each); a density needs at least {MIN_COLUMNS}"
    )


def safe_exponents(x: np.ndarray) -> np.ndarray:
    """Per column of ``x`` (n, d): 0, or the power of two whose removal brings a column with a largest
    magnitude beyond 2^±SAFE_EXPONENT near 1 (so means and variances neither overflow nor underflow)."""
    top = np.abs(x).max(axis=0)
    exponent = np.frexp(top)[1]
    extreme = (top > 2.0**SAFE_EXPONENT) | ((top > 0) & (top < 2.0**-SAFE_EXPONENT))
    return np.where(extreme, exponent, 0)


def clean_table(
    x: np.ndarray,
    seed: int = 0,
    *,
    drop_constant: bool = True,
    dequantize: bool = True,
    standardize: bool = True,
    source: str = "table",
) -> tuple[Splits, Cleaning]:
    """Splits (train, val, test) of the table ``x`` (n, d) and a record of the cleaning.

    See the module docstring for the steps. ``source`` names the table in errors.
    The result is deterministic for a given ``seed``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise UserError(f"{source}: a 2-D table is needed, got shape {x.shape}")
    check_table_shape(x, source)
    if not np.isfinite(x).all():
        raise UserError(f"{source}: contains NaN or inf")
    constant = constant_columns(x) if drop_constant else np.zeros(x.shape[1], bool)
    kept = np.flatnonzero(~constant)
    check_varying_columns(kept, x.shape[1], source)
    x = x[:, kept]
    with np.errstate(all="ignore"):  # checked below: a warning per overflow would say less
        shift = safe_exponents(x)
        x = np.ldexp(x, -shift)  # exact (a power of two): statistics of huge or tiny columns stay finite
        rng = np.random.default_rng(seed)
        quanta = discrete_quanta(x) if dequantize else {}
        for j, q in quanta.items():
            x[:, j] += q * rng.random(len(x))
        n_train, n_val, _ = split_sizes(len(x))
        order = rng.permutation(len(x))
        train, val, test = x[order[:n_train]], x[order[n_train : n_train + n_val]], x[order[n_train + n_val :]]
        mean, std = np.zeros(x.shape[1]), np.ones(x.shape[1])
        if standardize:
            mean, std = train.mean(axis=0), train.std(axis=0)
            std[std == 0] = 1.0  # constant within the training rows only: leave it unscaled
            train, val, test = ((s - mean) / std for s in (train, val, test))
        else:
            train, val, test = (np.ldexp(s, shift) for s in (train, val, test))
        mean, std = np.ldexp(mean, shift), np.ldexp(std, shift) if standardize else std
        quanta = {j: float(np.ldexp(q, shift[j])) for j, q in quanta.items()}
    for part in (train, val, test):
        bad = np.flatnonzero(~np.isfinite(part).all(axis=0))
        if len(bad):
            raise UserError(
                f"{source}: column {kept[bad[0]] + 1} overflows when standardised (values near the float limit)"
            )
    cleaning = Cleaning(
        kept=tuple(int(k) for k in kept),
        dropped=tuple(int(k) for k in np.flatnonzero(constant)),
        quanta={int(kept[j]): q for j, q in quanta.items()},
        mean=mean,
        std=std,
    )
    return Splits(np.ascontiguousarray(train), np.ascontiguousarray(val), np.ascontiguousarray(test)), cleaning


# ---------------------------------------------------------------- user files


class FileDataset(Dataset):
    """A user's own table: ``datasets.get("file:/path/data.csv")``.

    Reads CSV (header optional), whitespace-separated text or ``.npy`` with
    ``read_table`` and splits it with ``clean_table`` (each step can be turned
    off). ``dim`` is the dimension after cleaning; reading it reads the file.
    ``root`` is ignored: the path is the file's own. After ``load``,
    ``cleaning_`` records what was dropped, dequantised and standardised.
    """

    name: ClassVar[str] = "file"
    description: ClassVar[str] = "a user's table (CSV, whitespace text or .npy)"
    reshuffled_splits: ClassVar[bool] = True  # one table split 80/10/10 anew for each seed

    def __init__(
        self, path: str | Path, *, drop_constant: bool = True, dequantize: bool = True, standardize: bool = True
    ) -> None:
        if not str(path).strip():
            raise UserError("file: dataset needs a path, e.g. file:/data/table.csv")
        self.path = Path(path).expanduser()
        self.name = f"file:{path}"  # instance attribute: the registry key is dynamic
        self.options = dict(drop_constant=drop_constant, dequantize=dequantize, standardize=standardize)
        self._table: np.ndarray | None = None
        self.cleaning_: Cleaning | None = None
        if not self.path.exists():
            raise UserError(f"{self.path}: no such file")

    def table(self) -> np.ndarray:
        """The raw table (n, d), read once and kept."""
        if self._table is None:
            self._table = read_table(self.path)
        return self._table

    @property
    def dim(self) -> int:  # type: ignore[override]
        x = self.table()
        return int(x.shape[1] - constant_columns(x).sum()) if self.options["drop_constant"] else int(x.shape[1])

    def available(self, root: Path | None = None) -> tuple[bool, str]:
        if not self.path.is_file():
            return False, f"{self.path}: no such file"
        return True, ""

    def sizes(self) -> tuple[int, int, int] | None:
        return split_sizes(len(self.table()))

    def fingerprint(self) -> str:
        """SHA-256 of the file's content."""
        return sha256_of(regular_file(self.path, "data file"))

    def load(self, seed: int = 0, root: Path | None = None) -> Splits:
        splits, self.cleaning_ = clean_table(self.table(), seed, source=str(self.path), **self.options)
        return splits
