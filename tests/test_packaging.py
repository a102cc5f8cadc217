"""The wheel and sdist build, pass `twine check`, and the built wheel alone gives a working
`scanfill` in a fresh virtual environment (its dependencies come from this one, offline)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_and_sdist_build_check_and_run(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert check.returncode == 0 and check.stdout.count("PASSED") == 2, check.stdout + check.stderr
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert {"scanfill/cli/__init__.py", "scanfill/cli/load.py", "scanfill/sim/server.py", "scanfill/coord/queries.sql"} <= set(names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # the dependencies this environment already has, but not scanfill itself (an editable install)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n" + sysconfig.get_paths()["platlib"] + "\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import scanfill; print(scanfill.__file__)"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert where.startswith(str(site)), where  # the wheel's copy, not the working tree
    for args in (["--help"], ["run", "--help"], ["sim", "--help"], ["demo", "--help"]):
        out = subprocess.run([str(venv / "bin" / "scanfill"), *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "Usage: scanfill" in out.stdout, (args, out.stderr)
