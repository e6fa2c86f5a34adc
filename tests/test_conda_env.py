"""The rules' conda environment (``--software-deployment-method conda``) asks for what pyproject.toml asks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).parents[1]


def test_conda_env_pins_what_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "envs" / "prunebench.yaml").read_text())
    pip = next(entry["pip"] for entry in env["dependencies"] if isinstance(entry, dict))
    assert sorted(p for p in pip if not p.startswith("-e")) == sorted(project["dependencies"])
