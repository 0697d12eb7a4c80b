"""Method variants: one method run with overridden parameters as its own row.

Grammar (command line ``--methods`` and TOML ``methods = [...]``)::

    entry   = NAME | NAME "[" item ("," item)* "]"
    item    = KEY "=" VALUE | VALUE         a bare VALUE adds another value to the previous KEY

Values are TOML scalars (``0.05``, ``true``, ``"a b"``); a bare word such as ``score_model`` is a
string. A key with several values expands into one variant each, and several keys into their
product, in the order written: ``a[x=1,2,y=3]`` is ``a[x=1,y=3]`` and ``a[x=2,y=3]``. A comma or
``=`` inside a string value needs quotes. The variant's name, ``NAME[KEY=VALUE,...]`` with one value
per key, is its row name in results, reports and figures, and parses back to the same variant.

Example::

    [v.name for v in expand("supervised_diffusion[eps=0.01,0.05]")]
    # ['supervised_diffusion[eps=0.01]', 'supervised_diffusion[eps=0.05]']
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from harness.errors import UserError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE = re.compile(r"[A-Za-z0-9_.+\-]+")


@dataclass(frozen=True)
class Variant:
    """A base method and the parameters it overrides (empty for the plain method)."""

    base: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """``base`` for the plain method, else ``base[k=v,...]`` (parses back to this variant)."""
        if not self.params:
            return self.base
        return f"{self.base}[{','.join(f'{k}={format_value(v)}' for k, v in self.params)}]"


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split ``text`` at ``sep`` outside brackets and quotes; pieces are stripped."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def parse_value(token: str, where: str) -> Any:
    """A TOML scalar (number, boolean, quoted string), else a bare word as a string."""
    try:
        return tomllib.loads(f"v = {token}")["v"]
    except tomllib.TOMLDecodeError:
        if _BARE.fullmatch(token):
            return token
        raise UserError(
            f"method variant '{where}': cannot read the value {token!r} (quote a string that holds "
            "spaces or punctuation)"
        ) from None


def format_value(value: Any) -> str:
    """The shortest text that ``parse_value`` reads back as ``value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if _BARE.fullmatch(value) and parse_value(value, value) == value:
            return value
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


def expand(entry: str) -> list[Variant]:
    """The variants of one ``methods`` entry (one for a plain name); raises UserError when malformed."""
    entry = entry.strip()
    if "[" not in entry and "]" not in entry:
        return [Variant(entry)]
    m = re.fullmatch(r"([^\[\]]+)\[(.*)\]", entry, flags=re.S)
    if not m:
        raise UserError(f"method variant '{entry}' must look like name[param=value,...]")
    base, body = m.group(1).strip(), m.group(2)
    if not body.strip():
        raise UserError(f"method variant '{entry}' has no parameters between the brackets")
    values: dict[str, list[Any]] = {}
    key = None
    for item in split_top_level(body):
        head, eq, rest = item.partition("=")
        if eq and _KEY.fullmatch(head.strip()):
            key = head.strip()
            if key in values:
                raise UserError(f"method variant '{entry}' sets {key} twice (list its values after one {key}=)")
            values[key] = []
            item = rest.strip()
        elif key is None:
            raise UserError(f"method variant '{entry}' must start with param=value, got '{item}'")
        if not item:
            raise UserError(f"method variant '{entry}' has an empty value for {key}")
        values[key].append(parse_value(item, entry))
    return [Variant(base, tuple(zip(values, combo, strict=False))) for combo in itertools.product(*values.values())]


def expand_all(entries: list[str]) -> list[Variant]:
    """Every variant of ``entries``, duplicates (by name) dropped, in order."""
    out = {v.name: v for e in entries for v in expand(e)}
    return list(out.values())


def base_of(name: str) -> str:
    """The base method of a row's method name (``a[x=1]`` -> ``a``; a plain name is its own base)."""
    return name.split("[", 1)[0].strip()
