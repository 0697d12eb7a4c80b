"""Run configuration: the embedded default, TOML files, and command-line overrides.

A config file is TOML with these top-level keys (all optional)::

    name = "my-run"                 # run directory reports/<name> unless --out
    methods = ["gaussian", "kde"]   # or "all" (every available method); variants such as
                                    # "supervised_diffusion[teacher=score_model,flow_matching]"
                                    # (harness/variants.py) run as rows of their own
    datasets = ["8gaussians"]       # or "all", or a group ("2d": the 2-D toy sets); default
                                    # 8gaussians, checkerboard, circles
    seeds = 3                       # seeds 0..2 (the default); or a list [0, 3, 7] (each 0 .. 2^32 - 1)
    profile = "quick"               # smoke | quick | paper
    device = "auto"                 # auto | cpu | cuda
    time_limit = 900                # seconds per cell, up to 30 days (default by profile)
    sample_size = 5000              # samples per cell for sample metrics (at least 5)
    data_root = "~/data"            # else $DENSITYBENCH_DATA, else ~/.cache/densitybench
    executor = "local"              # local | ray
    jobs = "auto"                   # cells at a time (local executor): "auto" or a whole number
    budget = 60                     # training seconds per trainable method (stops at the first
                                    # checkpoint past it; default: none)
    shard = "0/4"                   # run only shard I of N of the grid (harness/shards.py; default:
                                    # the whole grid); usually given per job: run --shard I/N
    params_from = "reports/tuned"   # run the parameters the tuning studies of this run directory
                                    # chose (harness/tuning.py; default: the profile's)
    [params.supervised_diffusion]   # per-method parameter overrides
    steps = 200

The command line overrides the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.errors import UserError, suggest, unknown
from harness.shards import parse_shard
from harness.toolkit.files import MAX_CONFIG_BYTES, read_utf8
from harness.variants import Variant, expand_all
from methods import PROFILES

#: The embedded default grid (`make run`): three seeds on three 2-D sets with known densities, so every
#: table has 95% intervals and ties within the 20-minute budget on 2 cores (docs/comparisons.md says why).
DEFAULT_DATASETS = ("8gaussians", "checkerboard", "circles")
DEFAULT_SEEDS = (0, 1, 2)
DEVICES = ("auto", "cpu", "cuda")
EXECUTORS = ("local", "ray")
#: Per-cell time limits (seconds) by profile when the config sets none.
DEFAULT_TIME_LIMIT = {"smoke": 300, "quick": 900, "paper": 48 * 3600}
#: Upper bound of ``jobs = "auto"`` on CPU (each cell holds its data and models in memory).
MAX_AUTO_JOBS = 8
#: Largest per-cell time limit (30 days); the runner waits on its workers in slices far below it.
MAX_TIME_LIMIT = 30 * 24 * 3600
#: Largest seed: numpy's legacy RandomState (used by POT's sliced Wasserstein) takes 0 .. 2^32 - 1, and
#: larger seeds would alias (supervised_diffusion's streams use seed mod 2^32); SQLite would take 2^63 - 1.
MAX_SEED = 2**32 - 1
#: Most seeds one run may list (``seeds = N`` makes N of them).
MAX_SEED_COUNT = 100_000


@dataclass
class Config:
    """Everything that defines a run; see the module docstring for the TOML form."""

    name: str = "default"
    methods: list[str] | str = "all"
    datasets: list[str] | str = field(default_factory=lambda: list(DEFAULT_DATASETS))
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    profile: str = "quick"
    device: str = "auto"
    time_limit: float | None = None
    sample_size: int = 5000
    data_root: str | None = None
    executor: str = "local"
    address: str | None = None
    jobs: int | str = "auto"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    budget: float | None = None
    shard: str | None = None  # "I/N": this run holds shard I of the grid's N (harness/shards.py)
    #: A run directory whose tuning studies choose the parameters (``run --params-from``, the test phase
    #: of ``tune``); None: the profile's parameters.
    params_from: str | None = None

    def cell_time_limit(self) -> float:
        return float(self.time_limit if self.time_limit is not None else DEFAULT_TIME_LIMIT[self.profile])

    def cell_jobs(self) -> int:
        """Cells run at a time by the local executor. "auto": one on a GPU (cells would share it), else
        one per CPU core up to ``MAX_AUTO_JOBS``, each cell then with cores / jobs torch threads."""
        if self.jobs != "auto":
            return int(self.jobs)
        from harness.gpu import resolve_device  # asks a child process: no CUDA context here

        if resolve_device(self.device) == "cuda":
            return 1
        return max(1, min(os.cpu_count() or 1, MAX_AUTO_JOBS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hash(self) -> str:
        """The config's hash; the shards of one grid share it, and a run without ``params_from`` keeps the
        hash it had before that key existed."""
        spec = {k: v for k, v in self.to_dict().items() if k != "shard" and not (k == "params_from" and v is None)}
        return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


KEYS = tuple(f.name for f in fields(Config))


def parse_seeds(value: Any, where: str = "seeds") -> list[int]:
    """``3`` -> [0, 1, 2]; ``"0,3,7"`` or ``[0, 3, 7]`` -> [0, 3, 7]."""
    if isinstance(value, bool):
        raise UserError(f"{where} must be a positive integer or a list of integers, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise UserError(f"{where} must be at least 1, got {value}")
        if value > MAX_SEED_COUNT:
            raise UserError(f"{where} = {value} is too many seeds; at most {MAX_SEED_COUNT:,}")
        return list(range(value))
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise UserError(
                f"{where} must be a count (e.g. 3) or a comma list of integers (e.g. 0,3,7), got '{value}'"
            ) from None
        if len(nums) == 1 and "," not in value:
            return parse_seeds(nums[0], where)
        value = nums
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if any(v < 0 for v in value):
            raise UserError(f"{where} must be non-negative integers, got {value}")
        if any(v > MAX_SEED for v in value):
            raise UserError(
                f"{where} must lie in 0..{MAX_SEED} (the seed range of numpy's RandomState), got {max(value)}"
            )
        if len(value) > MAX_SEED_COUNT:
            raise UserError(f"{where} lists {len(value):,} seeds; at most {MAX_SEED_COUNT:,}")
        return sorted(dict.fromkeys(value))
    raise UserError(f"{where} must be a positive integer or a non-empty list of integers, got {value!r}")


def _name_list(value: Any, key: str) -> list[str] | str:
    from harness.variants import split_top_level

    if isinstance(value, str):
        if value == "all" or (key == "datasets" and value in _dataset_groups()):
            return value
        items = (
            [v for v in split_top_level(value) if v]
            if key == "methods"
            else [v.strip() for v in value.split(",") if v.strip()]
        )
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise UserError(f"{key} must be a list of names or a comma-separated string, got {value!r}")
    if not items:
        raise UserError(f"{key} is empty")
    return [check_text(item, key) for item in items]


def _dataset_groups() -> list[str]:
    """Names that select a group of datasets (``Dataset.group``, e.g. "2d")."""
    import datasets

    return datasets.groups()


def _check_choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UserError(f"unknown {key} '{value}'{suggest(str(value), choices)}; valid: {', '.join(choices)}")
    return value


def _positive(value: Any, key: str, kind: type = int) -> Any:
    ok_type = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
    if isinstance(value, bool) or not ok_type:
        raise UserError(f"{key} must be a {'number' if kind is float else 'whole number'}, got {value!r}")
    if value <= 0:
        raise UserError(f"{key} must be positive, got {value}")
    return value


def _time_limit(value: Any) -> float:
    """A finite number of seconds in (0, MAX_TIME_LIMIT]."""
    seconds = float(_positive(value, "time_limit", float))
    if not math.isfinite(seconds) or seconds > MAX_TIME_LIMIT:
        raise UserError(
            f"time_limit must be a finite number of seconds in (0, {MAX_TIME_LIMIT}] (30 days), got {value}"
        )
    return seconds


def _sample_size(value: Any) -> int:
    """A whole number of samples, at least what every sample metric needs."""
    from harness.sample_metrics import min_sample_size

    size = _positive(value, "sample_size")
    if size < min_sample_size():
        raise UserError(
            f"sample_size must be at least {min_sample_size()} (the sample metrics need that many "
            f"rows per sample), got {size}"
        )
    return size


def check_name(value: Any) -> str:
    """A run name: one path component (no '/', '\\', control characters, '.' or '..')."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or value in (".", "..")
        or any(c in value for c in "/\\")
        or any(ord(c) < 32 for c in value)
    ):
        raise UserError(f"name must be a non-empty file name (no '/', '\\', '.' or '..'), got {value!r}")
    return value


def run_directory(cfg: Config, out: str | Path | None, reports_root: Path) -> Path:
    """The run directory: ``out`` when given (the user's choice), else ``reports_root/<name>``, which
    must stay inside ``reports_root``."""
    if out is not None:
        if not str(out).strip():
            raise UserError("--out is empty; give a run directory")
        return Path(out)
    run_dir = reports_root / check_name(cfg.name)
    if run_dir.resolve().parent != reports_root.resolve():
        raise UserError(f"run name {cfg.name!r} leads outside {reports_root}; choose another name or use --out")
    return run_dir


def check_budget(value: Any) -> float:
    """A training budget in seconds: a finite positive number (``"90"`` from the command line too)."""
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"budget must be a finite positive number of seconds, got {value!r}")
    return seconds


def _whole(value: Any, key: str) -> Any:
    """``"4"`` (from the command line) -> 4; anything else unchanged."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise UserError(f"{key} must be 'auto' or a positive whole number, got '{value}'") from None
    return value


def validate(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a Config from a plain dict, with one-line errors for any bad key or value."""
    for key in raw:
        if key not in KEYS:
            raise UserError(f"unknown {source} key '{key}'{suggest(key, KEYS)}; valid keys: {', '.join(KEYS)}")
    cfg = Config()
    if "name" in raw:
        cfg.name = check_name(raw["name"])
    if "methods" in raw:
        cfg.methods = _name_list(raw["methods"], "methods")
    if "datasets" in raw:
        cfg.datasets = _name_list(raw["datasets"], "datasets")
    if "seeds" in raw:
        cfg.seeds = parse_seeds(raw["seeds"])
    if "profile" in raw:
        cfg.profile = _check_choice(raw["profile"], "profile", PROFILES)
    if "device" in raw:
        cfg.device = _check_choice(raw["device"], "device", DEVICES)
    if "executor" in raw:
        cfg.executor = _check_choice(raw["executor"], "executor", EXECUTORS)
    if raw.get("time_limit") is not None:
        cfg.time_limit = _time_limit(raw["time_limit"])
    if "sample_size" in raw:
        cfg.sample_size = _sample_size(raw["sample_size"])
    if raw.get("budget") is not None:
        cfg.budget = check_budget(raw["budget"])
    if raw.get("shard") is not None:
        cfg.shard = str(parse_shard(raw["shard"]))
    if raw.get("jobs") is not None:
        cfg.jobs = raw["jobs"] if raw["jobs"] == "auto" else _positive(_whole(raw["jobs"], "jobs"), "jobs")
    for key in ("data_root", "address", "params_from"):
        if raw.get(key) is not None:
            if not isinstance(raw[key], str) or not raw[key].strip():
                raise UserError(f"{key} must be a non-empty string, got {raw[key]!r}")
            setattr(cfg, key, raw[key])
    if "params" in raw:
        params = raw["params"]
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            raise UserError("params must be a table of per-method tables, e.g. [params.kde]")
        cfg.params = {k: dict(v) for k, v in params.items()}
    return cfg


def check_executor_options(cfg: Config, raw: dict[str, Any]) -> None:
    """Refuse options the chosen executor would ignore: ``address`` is Ray's, ``jobs`` the local one's."""
    if cfg.address is not None and cfg.executor != "ray":
        raise UserError("address is the Ray cluster's (executor ray); the local executor would ignore it")
    if cfg.executor == "ray" and raw.get("jobs") not in (None, "auto"):
        raise UserError(
            "jobs sets the local executor's parallelism; Ray schedules cells on its cluster's CPUs and GPUs"
        )


def check_text(value: str, key: str) -> str:
    """``value`` when it is Unicode text; a name holding undecodable bytes (a file name that is not UTF-8,
    as Python passes it on) cannot be stored in the results database."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "backslashreplace").decode()
        raise UserError(
            f"{key} '{shown}' holds bytes that are not UTF-8 text; rename the file (or use a UTF-8 locale)"
        ) from None
    return value


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file (a regular file of at most MAX_CONFIG_BYTES, UTF-8 whatever the locale);
    unreadable, malformed or absurdly nested files give one-line errors."""
    if not str(path).strip():
        raise UserError("--config is empty; give a TOML file")
    p = Path(path)
    text = read_utf8(p, "config file", max_bytes=MAX_CONFIG_BYTES)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {p} is not valid TOML: {e}") from None
    except RecursionError:
        raise UserError(f"config file {p} nests arrays or tables too deeply to be a config") from None
    raw.setdefault("name", p.stem)
    return raw


def build(config_file: str | None, overrides: dict[str, Any]) -> Config:
    """File values (if any), then command-line ``overrides`` (None values ignored)."""
    raw = load_toml(config_file) if config_file is not None else {}
    cfg = validate(raw, source=f"config file {config_file}" if config_file is not None else "config")
    merged = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    cfg = validate(merged, source="config") if overrides else cfg
    check_executor_options(cfg, merged)
    return cfg


def resolve_names(cfg: Config) -> tuple[list[Variant], list[str], dict[str, str]]:
    """Expand "all", dataset groups ("2d") and method variants, check every name and variant parameter, and return
    (method variants, datasets, skipped-method reasons by variant name)."""
    import datasets
    import methods

    unavailable = methods.unavailable()
    if cfg.methods == "all":
        meths = [Variant(m) for m in methods.names() if m not in unavailable]
        skipped = {m: r for m, r in unavailable.items() if m in methods.names()}
    else:
        meths = expand_all(cfg.methods)
        for v in meths:
            methods.get(v.base)  # raises a UserError with a suggestion
        skipped = {v.name: unavailable[v.base] for v in meths if v.base in unavailable}
    if cfg.datasets == "all":
        dsets = datasets.names()
    elif isinstance(cfg.datasets, str):  # a group, e.g. "2d"
        dsets = datasets.in_group(cfg.datasets)
    else:
        dsets = list(dict.fromkeys(cfg.datasets))
    for d in dsets:
        if d.startswith("file:"):
            _ = datasets.get(d).dim  # reads and checks the file now: a malformed table is a config error
        elif d in datasets.names() or d in datasets.unavailable():
            datasets.get_class(d)  # a dataset whose module failed to import says why
        else:  # the valid names include the keywords, so '2dd' suggests '2d'
            raise unknown("dataset", d, [*datasets.names(), "all", *datasets.groups()])
    bases = list(dict.fromkeys(v.base for v in meths))
    for m in cfg.params:
        if m not in bases:
            raise UserError(f"params given for method '{m}' which is not in this run{suggest(m, bases)}")
    for v in meths:  # names, types, ranges and choices of every parameter (variants' too), before any cell runs
        if v.name not in skipped:
            methods.resolve_params(v.base, cfg.profile, {**cfg.params.get(v.base, {}), **dict(v.params)})
    return meths, dsets, skipped
