"""What `ray job submit --working-dir .` uploads from this repository: Ray's own packaging
(the function the job CLI calls), with the repository's .gitignore and .rayignore. A job needs
the specs; the git history and the committed study outputs (docs/results/) stay home, so the
package stays small however many studies are committed (Ray refuses one of 512 MiB)."""

from __future__ import annotations

import zipfile

from cli_helpers import ROOT


def test_the_job_package_holds_the_specs_and_leaves_out_git_and_the_study_outputs(tmp_path):
    from ray._private.runtime_env import packaging

    package = tmp_path / "package.zip"
    packaging.create_package(str(ROOT), package, include_parent_dir=False, excludes=[],
                             include_gitignore=True)
    names = zipfile.ZipFile(package).namelist()
    assert "tune_specs/smoke.yaml" in names and "pyproject.toml" in names
    assert any(name.startswith("tune_specs/study/") for name in names)
    assert "docs/results.md" in names  # docs/ itself ships: only its results folder stays
    assert not [n for n in names if n.startswith((".git/", "docs/results/", ".venv/", "runs/"))]
    # The whole package: the code, specs, tests and docs pages (about 1.5 MiB on 2026-12-07,
    # against 84 MiB with .git and docs/results in it).
    assert package.stat().st_size < 10 * 2**20, package.stat().st_size
