"""The import graph of harness/, methods/ and datasets/ (scripts/check_imports.py): the checker on
small synthetic trees, then on the project itself."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scripts_as_modules import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_imports.py"


check_imports = load_script("check_imports.py")

#: A tree that keeps every rule: content -> contract and toolkit, engine -> packages and base modules.
CLEAN = {
    "harness/__init__.py": "",
    "harness/errors.py": "class UserError(Exception): ...\n",
    "harness/registry.py": "from harness.errors import UserError\n",
    "harness/toolkit/__init__.py": "from harness.toolkit.train import fit\n",
    "harness/toolkit/train.py": "import numpy\nfrom harness.errors import UserError\ndef fit(): ...\n",
    "harness/runner.py": "import methods\nfrom datasets.base import Dataset\nfrom harness import errors\n",
    "harness/report.py": "def render():\n    from harness.runner import run\n",
    "harness/sample_metrics.py": "import math\n",
    "methods/__init__.py": "from harness.registry import Registry\nfrom methods.base import Method\n",
    "methods/base.py": "from harness.toolkit import train\nclass Method: ...\n",
    "methods/gauss.py": "from methods import register\nfrom methods.base import Method\nfrom harness import errors\n"
    "from harness.toolkit.train import fit\n",
    "datasets/__init__.py": "from harness.registry import Registry\nfrom datasets.base import Dataset\n",
    "datasets/base.py": "class Dataset: ...\n",
    "datasets/toy.py": "from datasets import register\nfrom datasets.base import Dataset\nfrom harness.errors import UserError\n",
}


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def problems(tmp_path: Path, changes: dict[str, str] | None = None) -> list[str]:
    """check() of the clean tree with ``changes`` (path -> text) written over it."""
    return check_imports.check(make_tree(tmp_path, {**CLEAN, **(changes or {})}))


def test_clean_tree_passes(tmp_path):
    assert problems(tmp_path) == []


def test_cycle_through_an_import_inside_a_function_is_found(tmp_path):
    found = problems(
        tmp_path,
        {
            "harness/figures.py": "import harness.report\n",
            "harness/report.py": "def render():\n    from harness import figures\n",
        },
    )
    assert found == [
        "import cycle among harness.figures, harness.report: harness.figures -> harness.report "
        "(harness/figures.py:1) -> harness.figures (harness/report.py:2)"
    ]


def test_base_importing_its_package_back_is_a_cycle(tmp_path):
    """``from methods import _util`` in methods/base.py imports the package, whose __init__ imports base."""
    found = problems(
        tmp_path,
        {"methods/base.py": "from methods import _util\nclass Method: ...\n", "methods/_util.py": "import math\n"},
    )
    assert len(found) == 1 and found[0].startswith("import cycle among methods, methods.base:")


def test_relative_imports_are_resolved(tmp_path):
    found = problems(
        tmp_path, {"harness/runner.py": "from . import report\n", "harness/report.py": "from .runner import run\n"}
    )
    assert len(found) == 1 and "among harness.report, harness.runner" in found[0]


def test_longer_cycle_is_reported_once_with_its_path(tmp_path):
    found = problems(
        tmp_path,
        {
            "harness/a.py": "import harness.b\n",
            "harness/b.py": "import harness.c\n",
            "harness/c.py": "def f():\n    import harness.a\n",
        },
    )
    assert found == [
        "import cycle among harness.a, harness.b, harness.c: harness.a -> harness.b (harness/a.py:1) "
        "-> harness.c (harness/b.py:1) -> harness.a (harness/c.py:2)"
    ]


@pytest.mark.parametrize(
    "path, text, expected",
    [
        (
            "methods/gauss.py",
            "def fit():\n    from harness.sample_metrics import energy\n",
            "methods/gauss.py:2: content methods.gauss imports harness.sample_metrics",
        ),
        (
            "datasets/base.py",
            "from harness import sample_metrics\n",
            "datasets/base.py:1: content datasets.base imports harness.sample_metrics",
        ),
        (
            "harness/download.py",
            "def fetch():\n    from datasets.toy import Toy\n",
            "harness/download.py:2: engine harness.download imports the plugin module datasets.toy",
        ),
        (
            "harness/runner.py",
            "from methods import gauss\n",
            "harness/runner.py:1: engine harness.runner imports the plugin module methods.gauss",
        ),
        (
            "harness/toolkit/train.py",
            "from datasets.base import Dataset\n",
            "harness/toolkit/train.py:1: toolkit harness.toolkit.train imports datasets.base",
        ),
        (
            "harness/toolkit/train.py",
            "import harness.registry\n",
            "harness/toolkit/train.py:1: toolkit harness.toolkit.train imports harness.registry",
        ),
    ],
)
def test_layer_rules(tmp_path, path, text, expected):
    found = problems(tmp_path, {path: text})
    assert len(found) == 1 and found[0].startswith(expected), found


def test_command_line_exit_status(tmp_path):
    clean = make_tree(tmp_path / "clean", CLEAN)
    bad = make_tree(tmp_path / "bad", dict(CLEAN, **{"harness/errors.py": "import harness.registry\n"}))
    run = lambda root: subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True)  # noqa: E731
    assert run(clean).returncode == 0 and run(clean).stdout == ""
    result = run(bad)
    assert result.returncode == 1 and result.stdout.startswith("import cycle among harness.errors, harness.registry")
    missing = run(tmp_path / "nowhere")
    assert missing.returncode == 2 and "has no harness, methods, datasets folder" in missing.stderr


def test_project_import_graph_is_clean():
    result = subprocess.run([sys.executable, str(SCRIPT), str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, "import graph violations:\n" + result.stdout + result.stderr
