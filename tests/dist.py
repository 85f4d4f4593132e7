"""The package as users install it: `python -m build` makes the sdist, then the wheel from the
sdist (so a file missing from the sdist breaks the wheel too)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(outdir: Path) -> tuple:
    """(wheel, sdist) paths of this checkout, built into `outdir`."""
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(outdir), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    wheels, sdists = sorted(outdir.glob("*.whl")), sorted(outdir.glob("*.tar.gz"))
    assert len(wheels) == len(sdists) == 1, (wheels, sdists)
    return wheels[0], sdists[0]
