"""The README documents every registered method and dataset, keeps the quick start, and its example
of adding a method works as written."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import methods

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_lists_every_method():
    missing = [m for m in methods.names() if f"`{m}`" not in README]
    assert not missing, f"methods missing from README: {missing}"


def test_readme_lists_every_dataset():
    missing = [d for d in datasets.names() if f"`{d}`" not in README]
    assert not missing, f"datasets missing from README: {missing}"


def test_quick_start_is_make_run_and_make_test():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick and "make test" in quick


def readme_section(title: str) -> str:
    """The text of the README section ``## title`` (up to the next ``## `` heading)."""
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_adding_a_method_as_the_readme_says(tmp_path):
    """The README's example method, written as the one new file the README names into a copy of the
    project, is registered and passes the generic contract suite (tests/test_methods.py)."""
    code = readme_section("Adding a method").split("```python\n", 1)[1].split("```", 1)[0]
    target = re.match(r"# (methods/\w+\.py)\n", code)
    assert target, "the example must start with a comment naming its file, e.g. '# methods/my_method.py'"
    name = re.search(r'^    name = "(\w+)"$', code, re.MULTILINE)
    assert name, "the example must set the method's name"
    for folder in ("harness", "methods", "datasets"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tests").mkdir()
    for file in ("tests/test_methods.py", "tests/conftest.py", "tests/integrals.py", "pyproject.toml"):
        shutil.copy(ROOT / file, tmp_path / file)
    (tmp_path / target.group(1)).write_text(code)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_methods.py", "-k", name.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert re.search(r"\d+ passed", run.stdout) and " failed" not in run.stdout
