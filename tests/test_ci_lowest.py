""".ci/lowest-venv, the lowest-versions step of .ci/run: its venv sees the packages of the interpreter that runs it,
an active virtual environment's included (`venv --system-site-packages` saw only the base interpreter's, so a
contributor's venv failed collection with "No module named 'torch'"), behind its own pinned ones."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "lowest-venv"


def site_packages(venv: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([venv / "bin" / "python", "-c", code], capture_output=True, text=True, check=True).stdout.strip())


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_the_lowest_venv_sees_an_active_venvs_packages_behind_its_own(tmp_path):
    contributor = tmp_path / "contributor"  # a venv whose only package the base interpreter lacks
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", contributor], check=True)
    (site_packages(contributor) / "only_in_the_contributor_venv.py").write_text("WHERE = 'contributor venv'\n")
    (site_packages(contributor) / "shadowed_by_lowest.py").write_text("WHERE = 'contributor venv'\n")
    env = {**os.environ, "VIRTUAL_ENV": str(contributor), "PATH": f"{contributor / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONHOME", None)
    lowest = tmp_path / "lowest"
    subprocess.run(["bash", SCRIPT, lowest, "--no-install"], env=env, check=True)
    (site_packages(lowest) / "shadowed_by_lowest.py").write_text("WHERE = 'lowest venv'\n")  # as a pinned package
    code = "import only_in_the_contributor_venv as a, shadowed_by_lowest as b; print(a.WHERE, '|', b.WHERE)"
    seen = subprocess.run([lowest / "bin" / "python", "-c", code], capture_output=True, text=True, env={**env, "PYTHONPATH": ""})
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.strip() == "contributor venv | lowest venv"
