"""platform/ must never be a package: it would shadow the stdlib module ray/torch/wandb use."""

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_platform_dir_is_not_a_package():
    assert not (REPO / "platform" / "__init__.py").exists()


def test_platform_from_repo_root_is_the_stdlib_module():
    probe = "import platform, marlscale; print(platform.__file__); print(platform.system())"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(out[0]).resolve().parent == stdlib
    assert out[1]  # a working stdlib function, not an empty shadow package
