"""Every module of every realloop package imports (a missing package-dir mapping fails here)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"realloop.data": "data", "realloop.robot": "robot", "realloop.sim": "sim", "realloop.policies": "policies"}


def _modules() -> list[str]:
    names = ["realloop"]
    for pkg, folder in PACKAGES.items():
        names.append(pkg)
        for info in pkgutil.walk_packages([str(ROOT / folder)], prefix=pkg + "."):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_module_imports(name: str) -> None:
    mod = importlib.import_module(name)
    # the installed module must be the file in this checkout, not a stale copy elsewhere
    assert Path(mod.__file__).resolve().is_relative_to(ROOT)


def test_every_code_folder_is_a_mapped_package() -> None:
    for folder in PACKAGES.values():
        assert (ROOT / folder / "__init__.py").is_file()
    assert len(_modules()) > len(PACKAGES) + 5
