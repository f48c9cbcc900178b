"""Every committed report under docs/results/ redraws to the same tables from its committed
runs (no Ray): the report code can be changed without changing a published number.

A committed report is a report.md whose runs (the `## Runs` lines) are all in the repository;
it is redrawn with the flags its report.md records (`--ci` from the definition of ±, `--last`
from the one of Final, `--budget`, `--threshold` and `--aggregate iqm` where it names them)
into a temporary
folder, then every CSV is compared byte for byte, and
report.md line for line but for the line that says when and at which commit it was made.

Also a script, to check a checkout of other code against this tree's reports:

    PYTHONPATH=OTHER/platform python tests/unit/test_committed_reports.py
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
RUN_LINE = re.compile(r"^- `([^`]+)` \((\w+)\)")
MADE_LINE = "- report made "
"""report.md's one line that differs on every redraw (its date and the code's commit)."""


@dataclass(frozen=True)
class CommittedReport:
    """A report.md, the runs it was drawn from (relative to the repository) and its flags."""

    folder: Path
    runs: tuple[str, ...]
    ci: str
    last: int
    thresholds: tuple[float, ...] = ()
    budget: float | None = None
    aggregate: str = "mean"

    @property
    def name(self) -> str:
        return str(self.folder.relative_to(RESULTS))

    @property
    def missing_runs(self) -> list[str]:
        return [run for run in self.runs if not (ROOT / run).is_dir()]


def committed_reports() -> list[CommittedReport]:
    """Every report.md under docs/results/, read back into the command that drew it."""
    found = []
    for path in sorted(RESULTS.rglob("report.md")):
        lines = path.read_text().splitlines()
        runs = tuple(match[1] for match in map(RUN_LINE.match, lines) if match)
        spread = next(line for line in lines if line.startswith("- **\u00b1**"))
        last = next(re.search(r"last (\d+) values", line) for line in lines
                    if line.startswith("- **Final**"))
        text = "\n".join(lines)
        budget = re.search(r"`--budget ([^`]+)`", text)
        found.append(CommittedReport(
            path.parent, runs, "95" if "Student t" in spread else "std", int(last[1]),
            tuple(float(v) for v in re.findall(r"--threshold (\S+?)[ `]", text)),
            float(budget[1]) if budget else None,
            "iqm" if "`--aggregate iqm`" in text else "mean"))
    return found


def differences(report: CommittedReport, out: Path) -> list[str]:
    """Redraw `report` into `out`; what differs from the committed tables and report.md."""
    from marlscale.reports.report import build

    cwd = os.getcwd()
    os.chdir(ROOT)  # the runs as report.md names them: relative to the repository
    try:
        build(list(report.runs), out, ci=report.ci, last=report.last,
              thresholds=report.thresholds, budget_steps=report.budget,
              aggregate_by=report.aggregate, log=lambda *_: None)
    finally:
        os.chdir(cwd)
    found = []
    committed = {p.name for p in report.folder.glob("*.csv")}
    drawn = {p.name for p in out.glob("*.csv")}
    if committed != drawn:
        found.append(f"tables: committed {sorted(committed)}, redrawn {sorted(drawn)}")
    for name in sorted(committed & drawn):
        if (report.folder / name).read_text() != (out / name).read_text():
            found.append(f"{name} differs")

    def text(folder: Path) -> list[str]:
        return [line for line in (folder / "report.md").read_text().splitlines()
                if not line.startswith(MADE_LINE)]

    if text(report.folder) != text(out):
        found.append("report.md differs")
    return found


REPORTS = committed_reports()


def test_every_committed_report_is_found_and_only_reports_of_uncommitted_runs_are_left_out():
    checked = [r for r in REPORTS if not r.missing_runs]
    assert len(checked) >= 11, [r.name for r in checked]
    for report in REPORTS:  # a run left out of the repository is recorded by absolute path
        assert all(Path(run).is_absolute() for run in report.missing_runs), report


@pytest.mark.parametrize("report", [r for r in REPORTS if not r.missing_runs],
                         ids=lambda r: r.name)
def test_a_committed_report_redraws_to_the_same_tables(report, tmp_path):
    assert differences(report, tmp_path / "report") == []


if __name__ == "__main__":
    import marlscale

    print(f"code: {Path(marlscale.__file__).parent}")
    start, failed = time.perf_counter(), 0
    for report in REPORTS:
        if report.missing_runs:
            print(f"{report.name}: skipped, runs not committed: {', '.join(report.missing_runs)}")
            continue
        began = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            found = differences(report, Path(out) / "report")
        failed += bool(found)
        print(f"{report.name} ({' '.join(report.runs)}; --ci {report.ci} --last "
              f"{report.last}): {time.perf_counter() - began:.1f} s, "
              + ("; ".join(found) if found else "identical"))
    print(f"{time.perf_counter() - start:.1f} s in all")
    sys.exit(1 if failed else 0)
