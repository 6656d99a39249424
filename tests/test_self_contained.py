"""The repository is self-contained (issue 13 item 3): `grep -r '\\.\\./shared' README.md docs maps
api planner metareasoner ros_nodes mase` finds nothing; only tests (and bench/, whose default
path to their repository is overridden with `--peer`) may point at the project's shared folder."""
from __future__ import annotations

import os
from pathlib import Path

from conftest import ROOT

CHECKED = ("README.md", "docs", "maps", "api", "planner", "metareasoner", "ros_nodes", "mase")
GENERATED = {"__pycache__", ".pytest_cache", ".hypothesis"}  # made by running the code, not in the repository
PATTERN = b"../shared"


def shared_references(root: Path) -> list[str]:
    """What `grep -r '\\.\\./shared'` prints for CHECKED under `root`: every file, text or binary,
    read as bytes (folders Python makes when it runs are skipped)."""
    found = []
    for name in CHECKED:
        top = root / name
        if top.is_file():
            paths = [top]
        else:
            paths = []
            for folder, subfolders, files in os.walk(top):
                subfolders[:] = sorted(d for d in subfolders if d not in GENERATED)
                paths += [Path(folder) / f for f in sorted(files)]
        for path in paths:
            for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
                if PATTERN in line:
                    found.append(f"{path.relative_to(root)}:{number}: {line.decode(errors='replace').strip()[:120]}")
    return found


def test_nothing_outside_the_tests_refers_to_the_shared_folder():
    assert all((ROOT / name).exists() for name in CHECKED)
    assert shared_references(ROOT) == []


def test_the_check_finds_a_reference_in_text_and_binary_files(tmp_path):
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "README.md").write_text("# x\n\nsee `../shared/spec/MATH.md`\n")
    (tmp_path / "docs" / "results" / "figure.png").write_bytes(b"\x89PNG\x00\x01../shared/peers\x00")
    (tmp_path / "planner" / "__pycache__").mkdir(parents=True)
    (tmp_path / "planner" / "__pycache__" / "old.pyc").write_bytes(b"../shared")  # generated: skipped
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("PEERS = '../shared/peers'\n")  # tests may
    found = shared_references(tmp_path)
    assert [f.split(": ", 1)[0] for f in found] == ["README.md:3", "docs/results/figure.png:1"]
