"""Import a file of scripts/ as a module, so that tests call its functions directly."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(file_name: str) -> ModuleType:
    """``scripts/<file_name>`` as a module named after its stem (registered in ``sys.modules``, where
    dataclasses resolve their annotations)."""
    path = SCRIPTS / file_name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
