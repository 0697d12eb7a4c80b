"""The project's text files: no machine paths, no issue numbers, a README and method files of readable size.

Every file git tracks (or would track: untracked files not ignored) is read; binary files are
skipped. A line may show a machine path on purpose when it says so with the words "example path".
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Absolute paths that name one machine: home and work folders, temporary files, mounted data.
MACHINE_PATH = re.compile(r"(?<![\w.~$/-])/(?:work|root|tmp|Users|mnt|scratch)/|(?<![\w.~$/-])/home/[A-Za-z_]")
#: "issue 17", "issues 16", "issue #3", "(#12)": tests and docs say what, not which ticket.
ISSUE_NUMBER = re.compile(r"\bissues? #?\d+|\(#\d+\)", re.IGNORECASE)
EXAMPLE_MARK = "example path"


def project_text_files() -> dict[str, str]:
    """Relative path -> text of every tracked or trackable file that decodes as UTF-8 text."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    texts = {}
    for name in filter(None, listed.stdout.decode().split("\0")):
        path = ROOT / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            texts[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def offending_lines(pattern: re.Pattern, texts: dict[str, str]) -> list[str]:
    return [
        f"{name}:{number}: {line.strip()}"
        for name, text in texts.items()
        for number, line in enumerate(text.splitlines(), 1)
        if pattern.search(line) and EXAMPLE_MARK not in line
    ]


def test_patterns_find_what_they_are_for():
    machine = ("--out /tmp/x", "DATA=/work/shared", "/home/alice/x")  # example paths
    found = [MACHINE_PATH.search(s) is not None for s in machine]
    kept = [MACHINE_PATH.search(s) is None for s in ("reports/tmp/x", "~/.cache/x", "$TMPDIR/x", "a/root/b")]
    assert all(found) and all(kept)
    assert ISSUE_NUMBER.search("before issue 17") and ISSUE_NUMBER.search("see (#12)")
    assert not ISSUE_NUMBER.search('plot_style = ("#d62728", "o")')


def test_no_machine_paths():
    bad = offending_lines(MACHINE_PATH, project_text_files())
    assert not bad, "machine-specific paths (use $DENSITYBENCH_DATA, OUT_DIR or a relative path):\n" + "\n".join(bad)


def test_no_issue_numbers():
    texts = {name: text for name, text in project_text_files().items() if name != "tests/test_repository_text.py"}
    bad = offending_lines(ISSUE_NUMBER, texts)
    assert not bad, "issue numbers (say what the code or test does instead):\n" + "\n".join(bad)


def test_readme_is_a_guide_and_method_files_stay_readable():
    """The README stays a user's guide (measurements live in docs/) and no method file grows past
    what a reader takes in (a method's helpers go in a private module beside it)."""
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) < 300
    long = {p.name: n for p in (ROOT / "methods").glob("*.py") if (n := len(p.read_text().splitlines())) >= 550}
    assert not long, f"method files of 550 lines or more: {long}"
