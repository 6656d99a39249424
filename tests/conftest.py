from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPS = ROOT / "maps"


@pytest.fixture
def write_map(tmp_path):
    """Write map text to a file and return its path."""

    def write(text: str, name: str = "bad.map") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
