"""Helpers to assemble Alembic directories from the fixture corpus."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "migrations"


@pytest.fixture
def assemble(tmp_path: Path) -> Callable[..., Path]:
    """Copy the base revision plus the given corpus files into a fresh Alembic directory."""

    def build(*files: Path, base: bool = True, env: str | None = None) -> Path:
        alembic_dir = tmp_path / "alembic"
        versions = alembic_dir / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        if base:
            shutil.copy(CORPUS / "base.py", versions / "base.py")
        for index, file in enumerate(files):
            shutil.copy(file, versions / f"v{index}_{file.name}")
        if env is not None:
            (alembic_dir / "env.py").write_text(env)
        return alembic_dir

    return build
