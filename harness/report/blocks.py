"""The format-free pieces a report section is made of: headings, paragraphs and
plain tables. A section builder returns a list of blocks (or an empty list) from
the ``ReportData``; the Markdown and HTML renderers draw every section of
``data.sections`` with ``markdown_blocks`` / ``html_blocks``, so a new section
is one module (its builder) plus one entry in ``data.SECTIONS``.

Example::

    def section(data: ReportData) -> list[Block]:
        return [Heading("Tuning", "t-tuning"), Text("Trials per method ..."), Table(["method", "trials"], rows)]
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    """A section heading; ``anchor`` is its HTML id, ``level`` 2 (a part of the report) or 3."""

    text: str
    anchor: str
    level: int = 3


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text; ``note`` paragraphs are set smaller in HTML."""

    text: str
    note: bool = True


@dataclass(frozen=True)
class Table:
    """A plain table of text cells (no best or tie marks)."""

    header: list[str]
    rows: list[list[str]]


Block = Heading | Text | Table
