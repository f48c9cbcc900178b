"""A sweep spec's `warm_start` (issue #28: transfer as a sweep arm): every bad input exits 2
with one line naming the key, the value and what is allowed, before Ray starts, nothing
written. The source sweeps here are tiny fakes (a sweep.yaml, trial directories with params.json
and result rows); what needs a real checkpoint is in tests/integration/test_sweep_warm_start.py."""

from __future__ import annotations

import json

import pytest
import yaml
from cli_helpers import ROOT
from conftest import record_ray_starts
from marlscale.cli import main
from marlscale.runspec import SpecError, SweepSpec

SMOKE = ROOT / "tune_specs" / "smoke.yaml"


def fake_source(tmp_path, grid=None, iterations=3, name="source"):
    """A finished-looking sweep run directory: sweep.yaml and one trial directory per grid
    point with params.json and `iterations` result rows (no checkpoints)."""
    values = yaml.safe_load(SMOKE.read_text())
    values["grid"] = grid or {"algorithm": ["qmix"], "n_agents": [3, 5], "seed": [0]}
    if "n_agents" not in values["grid"]:
        values["env_config"]["n_agents"] = 3
    spec = SweepSpec.from_dict(values, source=name)
    root = tmp_path / name
    root.mkdir()
    (root / "sweep.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    for index, point in enumerate(spec.points()):
        trial = root / f"{spec.trial_name(point)}_0000{index}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps({"sweep": spec.to_dict(), **point}))
        rows = [{"training_iteration": i, "env_steps_sampled_lifetime": 50 * i,
                 "time_total_s": float(i)} for i in range(1, iterations + 1)]
        (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def target(tmp_path, warm_start, grid=None):
    """A warm-started sweep spec file (smoke.yaml's settings, N=6 by default)."""
    values = yaml.safe_load(SMOKE.read_text())
    values["experiment"] = "transfer"
    values["grid"] = grid or {"algorithm": ["qmix"], "n_agents": [6], "seed": [0]}
    values["warm_start"] = warm_start
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def refused(tmp_path, spec, capsys, monkeypatch) -> str:
    """The one error line of `marlscale sweep SPEC`, after checking it exited 2 before Ray
    started, wrote nothing and printed no traceback."""
    started = record_ray_starts(monkeypatch)
    run_dir = tmp_path / "run"
    assert main(["sweep", str(spec), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marlscale: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and not started and not run_dir.exists()
    return err


def test_warm_start_keys_are_declared_and_kept_out_of_specs_without_one(tmp_path):
    source = fake_source(tmp_path)
    spec = SweepSpec.load(target(tmp_path, {"from": str(source), "match": ["algorithm", "seed"],
                                            "where": {"n_agents": 5}}))
    assert spec.warm_start["where"] == {"n_agents": 5}
    assert spec.to_dict()["warm_start"]["match"] == ["algorithm", "seed"]
    # A sweep without warm_start keeps the sweep.yaml and fingerprint it had before #28.
    assert "warm_start" not in SweepSpec.load(SMOKE).to_dict()


@pytest.mark.parametrize("warm_start, expected", [
    ({"from": "x", "match": ["seed"], "pick": 1},
     "key 'warm_start.pick' is unknown; allowed: from, match, where"),
    ({"match": ["seed"]}, "key 'warm_start.from' is missing; allowed: the run directory of a "
                          "finished `marlscale sweep`"),
    ({"from": "x", "match": "seed"}, "warm_start.match='seed' is invalid; allowed: a list"),
    ({"from": 3}, "warm_start.from=3 is invalid; allowed: a string"),
    ({"from": "x", "match": ["seed", "seed"]}, "allowed: a list without repeated axes"),
    ({"from": "x", "match": ["training.lr"]},
     "warm_start.match=['training.lr'] is invalid; allowed: axes of both sweeps' grids; "
     "'training.lr' is not an axis of this one (its axes: algorithm, n_agents, seed)"),
    ({"from": "x", "match": ["seed"], "where": {"seed": 0}},
     "warm_start.where.seed=0 is invalid; allowed: an axis not also in warm_start.match"),
    ("runs/smoke", "warm_start='runs/smoke' is invalid; allowed: None or a mapping"),
])
def test_bad_warm_start_keys_are_refused(warm_start, expected, tmp_path, capsys, monkeypatch):
    err = refused(tmp_path, target(tmp_path, warm_start), capsys, monkeypatch)
    assert expected in err and "transfer.yaml" in err, err


def test_a_source_that_does_not_exist_or_is_not_a_sweep_is_named(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere"
    err = refused(tmp_path, target(tmp_path, {"from": str(missing), "match": ["seed"]}), capsys,
                  monkeypatch)
    assert f"warm_start.from={str(missing)!r} does not exist; allowed: the run directory of a " \
           "finished `marlscale sweep` (with sweep.yaml" in err
    train_run = tmp_path / "train-run"
    train_run.mkdir()
    (train_run / "spec.json").write_text("{}")
    err = refused(tmp_path, target(tmp_path, {"from": str(train_run), "match": ["seed"]}),
                  capsys, monkeypatch)
    assert f"warm_start.from={str(train_run)!r} is not a sweep run directory (it has no " \
           "sweep.yaml); allowed:" in err


def test_a_match_or_where_axis_the_source_lacks_is_named(tmp_path, capsys, monkeypatch):
    source = fake_source(tmp_path, grid={"algorithm": ["qmix"], "seed": [0]})
    spec = target(tmp_path, {"from": str(source), "match": ["n_agents"]})
    err = refused(tmp_path, spec, capsys, monkeypatch)
    assert "warm_start.match names 'n_agents', which is not an axis of the source sweep " \
           f"{str(source)!r} (its axes: algorithm, seed); allowed: axes of both sweeps " \
           "(algorithm, seed)" in err
    spec = target(tmp_path, {"from": str(source), "match": ["seed"], "where": {"n_agents": 3}})
    assert "warm_start.where names 'n_agents', which is not an axis of the source sweep" in \
        refused(tmp_path, spec, capsys, monkeypatch)
    spec = target(tmp_path, {"from": str(source), "match": ["seed"],
                             "where": {"algorithm": "vdn"}})
    assert "warm_start.where.algorithm='vdn' is invalid: the source sweep" in \
        refused(tmp_path, spec, capsys, monkeypatch)


def test_a_trial_with_no_source_trial_or_two_names_it_and_the_candidates(tmp_path, capsys,
                                                                         monkeypatch):
    source = fake_source(tmp_path)  # qmix, N = 3 and 5, seed 0
    spec = target(tmp_path, {"from": str(source), "match": ["algorithm", "seed"]})
    err = refused(tmp_path, spec, capsys, monkeypatch)
    assert "warm_start: trial qmix_N6_seed0 has 2 source trials (qmix_N3_seed0_00000, " \
           "qmix_N5_seed0_00001) with algorithm='qmix', seed=0 in" in err
    assert "allowed: exactly one per trial (add the axes that tell them apart to " \
           "warm_start.match, or keep one value with warm_start.where)" in err
    spec = target(tmp_path, {"from": str(source), "match": ["algorithm", "seed"],
                             "where": {"n_agents": 5}},
                  grid={"algorithm": ["qmix"], "n_agents": [6], "seed": [0, 1]})
    err = refused(tmp_path, spec, capsys, monkeypatch)
    assert "warm_start: trial qmix_N6_seed1 has no source trial (the source's trials: " \
           "qmix_N5_seed0_00001) with algorithm='qmix', seed=1 and n_agents=5 in" in err


def test_a_source_trial_without_a_final_checkpoint_is_named(tmp_path, capsys, monkeypatch):
    source = fake_source(tmp_path)  # result rows to its stop, but no checkpoint
    spec = target(tmp_path, {"from": str(source), "match": ["algorithm", "seed"],
                             "where": {"n_agents": 5}})
    err = refused(tmp_path, spec, capsys, monkeypatch)
    assert "warm_start: source trial qmix_N5_seed0_00001 in" in err
    assert "has no final checkpoint (checkpoint" in err and "is not a checkpoint" in err
    assert f"allowed: a source sweep whose trials finished (continue it with: marlscale sweep " \
           f"--resume {source})" in err
    stopped = fake_source(tmp_path, iterations=2, name="stopped")  # 2 of its 3 iterations
    spec = target(tmp_path, {"from": str(stopped), "match": ["algorithm", "seed"],
                             "where": {"n_agents": 3}})
    err = refused(tmp_path, spec, capsys, monkeypatch)
    assert "source trial qmix_N3_seed0_00000 in" in err
    assert "has no final checkpoint (it stopped at iteration 2, before its stop " \
           "(iterations=3))" in err


def test_a_resumed_trial_continues_from_its_own_checkpoint_not_the_source(monkeypatch):
    """SweepTrial loads its source's weights before its first step, unless Tune restored the
    trial's own checkpoint first (a resumed or retried trial). Ray-free: the Algorithm's own
    step and restore are stubbed."""
    from marlscale import train
    from marlscale.algorithms.algorithm import TeamQ
    from marlscale.sweeps.trial import SweepTrial

    loaded = []

    class Weights:
        def __init__(self, checkpoint):
            self.checkpoint = checkpoint

        def apply(self, algo):
            loaded.append(self.checkpoint)

    monkeypatch.setattr(TeamQ, "step", lambda self: {"stepped": True})
    monkeypatch.setattr(TeamQ, "restore", lambda self, path: None)
    monkeypatch.setattr(train, "check_warm_start", lambda spec, text, name: Weights(text))
    spec = SweepSpec.load(SMOKE)
    point = spec.points()[0]
    source = {"trial": "qmix_N3_seed0_00000", "checkpoint": "/src/checkpoint_000002",
              "env_steps": 150}

    def trial() -> SweepTrial:
        made = SweepTrial.__new__(SweepTrial)  # not built: only the warm-start bookkeeping
        made._warm_start, made._trial_spec = dict(source), (spec, point)
        return made

    fresh = trial()
    assert fresh.step() == {"stepped": True} and loaded == ["/src/checkpoint_000002"]
    fresh.step()
    assert loaded == ["/src/checkpoint_000002"]  # once, before the first step only
    loaded.clear()
    resumed = trial()
    resumed.restore("/run/trial/checkpoint_000001")
    resumed.step()
    assert loaded == []


def test_a_sweep_spec_without_warm_start_resolves_to_no_sources():
    from marlscale.sweeps import warm_start

    assert warm_start.resolve(SweepSpec.load(SMOKE)) is None
    with pytest.raises(SpecError):
        SweepSpec.from_dict({**yaml.safe_load(SMOKE.read_text()), "warm_start": {"from": ""}})
