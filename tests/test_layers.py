"""The import layers of pyproject.toml (`[tool.importlinter]`, README "Layers") hold, and a back door breaks them.

Each check runs `lint-imports` in a child process whose only copy of `catalyst_ttt` is the one under test (it
prints which), so the installed package never stands in for the copy with the planted import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = "catalyst_ttt floors"

# In the child: the package as found from ROOT (cwd, first on sys.path), then every contract on it.
CHECK = """
import sys
from importlinter.cli import lint_imports
import catalyst_ttt
print("analysed:", catalyst_ttt.__file__, flush=True)
sys.exit(lint_imports(config_filename="pyproject.toml", no_cache=True))
"""


def lint(root: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert f"analysed: {root / 'catalyst_ttt' / '__init__.py'}" in out, out
    return done.returncode, out


def test_layers_hold():
    code, out = lint(ROOT)
    assert code == 0, out
    assert f"{CONTRACT} KEPT" in out, out
    assert " 0 broken" in out, out


def test_an_upward_import_breaks_the_layers(tmp_path):
    shutil.copytree(ROOT / "catalyst_ttt", tmp_path / "catalyst_ttt", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    schema = tmp_path / "catalyst_ttt" / "schema.py"  # the bottom floor: imports nothing of the package
    schema.write_text(schema.read_text() + "\nimport catalyst_ttt.cli  # planted: the bottom floor reaching the top\n")

    code, out = lint(tmp_path)
    assert code != 0, out
    assert f"{CONTRACT} BROKEN" in out, out
    assert "catalyst_ttt.schema -> catalyst_ttt.cli" in out, out
