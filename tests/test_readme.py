"""The README documents every registered method and dataset and keeps the quick start."""

from pathlib import Path

import datasets
import methods

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_lists_every_method():
    missing = [m for m in methods.names() if f"`{m}`" not in README]
    assert not missing, f"methods missing from README: {missing}"


def test_readme_lists_every_dataset():
    missing = [d for d in datasets.names() if f"`{d}`" not in README]
    assert not missing, f"datasets missing from README: {missing}"


def test_quick_start_is_make_run_and_make_test():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick and "make test" in quick
