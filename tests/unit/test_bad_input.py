"""The bad-input battery of issue #12's audit: each case exits 2 with one line naming the key
or file, the value and what is allowed, before Ray starts, with no traceback."""

from __future__ import annotations

import pytest
from cli_helpers import ROOT
from conftest import record_ray_starts
from marlscale.cli import main
from marlscale.runspec import TrainSpec
from marlscale.specfile import loads

SPEC = "env: adversarial_pursuit\nenv_config: {{n_agents: 4, map_size: 18}}\n{extra}\n"


def spec_file(tmp_path, extra: str = "", name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(SPEC.format(extra=extra))
    return path


@pytest.mark.parametrize("text, value", [("1e-4", 1e-4), ("1e6", 1e6), ("5E-4", 5e-4),
                                         ("-2e+3", -2e3), ("1.0e+6", 1e6), ("12", 12),
                                         ("1e", "1e"), ("e5", "e5")])
def test_scientific_notation_is_a_number_in_set_values_and_spec_files(text, value, tmp_path):
    assert loads(text) == value and type(loads(text)) is type(value)
    spec = TrainSpec.load(spec_file(tmp_path, "training: {lr: 1e-4, epsilon_decay_steps: 4000}"))
    assert spec.training["lr"] == 1e-4 and isinstance(spec.training["lr"], float)


@pytest.mark.parametrize("case, expected", [
    ("training: {lr: .nan}", "lr=nan is invalid; allowed: a finite number > 0"),
    ("training: {lr: .inf}", "lr=inf is invalid; allowed: a finite number > 0"),
    ("training: {gamma: 0}", "gamma=0 is invalid; allowed: a number in (0, 1]"),
    ("training: {gamma: 1.5}", "gamma=1.5 is invalid; allowed: a number in (0, 1]"),
    ("training: {epsilon_start: 1.5}", "epsilon_start=1.5 is invalid; allowed: a number in"),
    ("training: {batch_size: 0}", "batch_size=0 is invalid; allowed: an integer >= 1"),
    ("training: {grad_clip: .inf}", "grad_clip=inf is invalid; allowed: None or a finite"),
    ("stop: {time_s: .nan}", "stop.time_s=nan is invalid; allowed: a finite number > 0"),
    ("env_config: {n_agents: 4, reward_mode: individual}\ntraining: {algorithm: qmix}",
     "reward_mode='individual' is invalid with algorithm='qmix': its qmix mixer learns from "
     "the team reward only; allowed: reward_mode='team', or an algorithm without a mixer "
     "(iql, mfq)"),
    ("resources: {num_env_runners: .nan}",
     "resources.num_env_runners=nan is invalid; allowed: an integer >= 0"),
    ("training: {curriculum: {schedule: linear, reward_scope: mine}}",
     "curriculum.reward_scope='mine' is invalid; allowed: team, active"),
    ("training: {curriculum: {schedule: linear, inactive: clone}}",
     "curriculum.inactive='clone' is invalid; allowed: random, policy"),
    ("training: {curriculum: {reward_scope: active}}",
     "curriculum.reward_scope='active' is invalid; allowed: 'team' with schedule 'none' (every "
     "agent is trained, so it would have no effect), or a schedule (linear, adaptive)"),
    ("training: {curriculum: {schedule: adaptive, plateau: 0.1, min_env_steps: 9000, "
     "max_env_steps: 5000}}", "curriculum.min_env_steps=9000 is invalid; allowed: at most "
                              "curriculum.max_env_steps (5000)"),
    ("env_config: {n_agents: 4, reward_scope: team}\ntraining: {curriculum: {schedule: linear, "
     "reward_scope: active}}", "env reward_scope='team' is invalid with curriculum.reward_scope="
                               "'active'; allowed: the same value, or leave the env's unset"),
])
def test_impossible_settings_in_a_spec_file_are_rejected(case, expected, tmp_path, capsys):
    assert main(["train", str(spec_file(tmp_path, case)), "--run-dir",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bad_spec_files_name_the_file_and_the_problem(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("env: battle\ntraining: {lr: [1e-4\n")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("env: battle  # caf\xe9\n".encode("latin-1"))
    cases = [
        (broken, f"{broken}: not valid YAML"),
        (latin, f"{latin}: the spec file is not UTF-8 text"),
        (tmp_path, f"{tmp_path}: the spec file is a directory; allowed: a YAML or JSON file"),
    ]
    for path, expected in cases:
        for command in ("train", "sweep"):
            assert main([command, str(path), "--run-dir", str(tmp_path / "run")]) == 2
            err = capsys.readouterr().err
            assert expected in err and "Traceback" not in err, (command, err)


def test_a_run_dir_that_cannot_be_created_is_refused_before_anything_starts(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for run_dir in ("/proc/marlscale-run", str(tmp_path / "file" / "run")):
        assert main(["train", "--iterations", "1", "--run-dir", run_dir]) == 2
        err = capsys.readouterr().err
        assert f"--run-dir '{run_dir}' cannot be created" in err and "Traceback" not in err


def test_a_set_value_that_is_not_yaml_names_the_flag(capsys):
    assert main(["train", "--set", "lr=[1e-4"]) == 2
    assert "--set 'lr=[1e-4': the value is not valid YAML" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train"], ["sweep"], ["evaluate"], ["league"], ["render"],
                                     ["export"], ["report"], ["rollout"], ["bench", "env"],
                                     ["bench", "train"]])
def test_every_command_prints_its_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0 and "usage: marlscale" in capsys.readouterr().out


@pytest.mark.parametrize("args, expected", [
    (["--n-agents", "10000000"], "this run (n_agents=10000000, replay_capacity=20000, 2 envs) "
                                 "needs about 99,567.4 GiB (replay 93,691.1 GiB"),
    (["--n-agents", "2000", "--set", "replay_capacity=2e5"],
     "needs about 188.6 GiB (replay 187.4 GiB, observations 0.0 GiB, learner 1.1 GiB), more "
     "than this machine's"),
    (["--n-agents", "2000", "--set", "replay_capacity=2e5"], "e.g. replay_capacity <= "),
])
def test_a_run_too_big_for_this_machine_is_refused_with_its_estimate(args, expected, tmp_path,
                                                                      capsys):
    assert main(["train", *args, "--iterations", "1", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "allowed: fewer agents or a smaller replay_capacity" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_the_memory_estimate_is_the_replay_actually_allocated():
    import numpy as np
    from marlscale.algorithms.memory import estimate
    from marlscale.algorithms.replay import TeamReplay
    from marlscale.envs import MagentTeamEnv
    from marlscale.envs.config import TeamEnvConfig

    def allocated(config, teams, n_active):
        env = MagentTeamEnv(config)
        env.set_active(n_active)
        obs, _ = env.reset()
        total = 0
        for team in teams:
            replay = TeamReplay(env.observation_spaces[team], int(env.action_spaces[team].nvec[0]),
                                300)
            actions = np.zeros((1, env.action_spaces[team].shape[0]), np.int64)
            replay.add_chunk({"obs": {k: np.stack([v, v]) for k, v in obs[team].items()},
                              "actions": actions, "reward": np.zeros(1, np.float32),
                              "terminated": np.zeros(1, bool)})
            total += replay.nbytes
        return total

    for config, teams in ((TeamEnvConfig(n_agents=25), ["predator"]),
                          (TeamEnvConfig(game="battle", n_agents=7, opponent="learned"),
                           ["red", "blue"])):
        assert estimate(config, teams, 300, 1).replay == allocated(config, teams, config.n_agents)
    # The replay stores the active agents only, in blocks of ceil(N / 20) slots.
    config = TeamEnvConfig(n_agents=100, n_active=12)
    assert estimate(config, ["predator"], 300, 1, peak_active=12).replay \
        == allocated(config, ["predator"], 12) < estimate(config, ["predator"], 300, 1).replay


@pytest.mark.parametrize("args, expected", [
    (["--n-agents", "10", "--active", "11"], "--active 11 is invalid; allowed: 1..10 (--n-agents)"),
    (["--active", "26"], "--active 26 is invalid; allowed: 1..25 (--n-agents)"),
    (["--n-agents", "100", "--active", "10", "--cores"], "--cores is invalid with"),
    (["--n-agents", "3000000", "--active", "10"], "needs about"),
    (["--profile", "--cores"], "--profile is invalid with --cores"),
    (["--profile", "--changes"], "--profile is invalid with --cores, --active or another"),
    (["--changes", "--n-agents", "100", "--active", "10"], "--changes is invalid with"),
])
def test_bench_train_refuses_a_case_it_cannot_run_before_ray_starts(args, expected, capsys,
                                                                    monkeypatch):
    started = record_ray_starts(monkeypatch)
    assert main(["bench", "train", *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.startswith("marlscale: error: ") and "Traceback" not in err
    assert not started


@pytest.mark.parametrize("value", ["0", "-3"])
def test_bench_train_active_must_be_positive(value, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["bench", "train", "--n-agents", "100", "--active", value])
    assert exit.value.code == 2
    assert f"--active: {value} is invalid; allowed: an integer >= 1" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command, expected", [
    (["train", "{spec}", "--num-gpus", "1"], "--num-gpus=1 is invalid: this machine has 0 CUDA "
                                             "GPU(s)"),
    (["train", "{spec}", "--set", "batch_size=8", "--num-gpus", "0.5"], "--num-gpus=0.5"),
    (["sweep", "{sweep}"], "resources.num_gpus=1 is invalid: this machine has 0 CUDA GPU(s)"),
])
def test_gpus_this_machine_lacks_are_refused_before_ray_starts(command, expected, tmp_path,
                                                               capsys, monkeypatch):
    started = record_ray_starts(monkeypatch)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("experiment: gpu\ngame: adversarial_pursuit\nenv_config: {n_agents: 4}\n"
                     "grid: {algorithm: [qmix], seed: [0]}\nstop: {iterations: 1}\n"
                     "resources: {num_gpus: 1}\n")
    names = {"spec": spec_file(tmp_path), "sweep": sweep}
    args = [arg.format(**names) for arg in command]
    assert main([*args, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and not started
    assert not (tmp_path / "run").exists()


# ---- cluster addresses, local-Ray flags, resuming a sweep (#14) ------------------------------
SMOKE = ROOT / "tune_specs" / "smoke.yaml"


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1:1", "--address '127.0.0.1:1' is unreachable (Connection refused within 10 s)"),
    ("nohost", "--address 'nohost' is invalid"),
])
def test_an_unreachable_or_malformed_address_fails_fast_and_names_it(address, expected, tmp_path,
                                                                     capsys):
    import time

    start = time.perf_counter()
    code = main(["sweep", str(SMOKE), "--address", address, "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "ray start --head" in err, err
    assert "Traceback" not in err and time.perf_counter() - start < 20
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, expected", [
    (["--dashboard-host", "0.0.0.0"], "--dashboard-host '0.0.0.0' is invalid without "
                                      "--dashboard"),
    (["--dashboard-port", "9000"], "--dashboard-port 9000 is invalid without --dashboard"),
    (["--dashboard", "--address", "127.0.0.1:6379"], "--dashboard is invalid with a cluster "
                                                     "address ('127.0.0.1:6379')"),
])
def test_local_ray_flags_are_refused_where_they_mean_nothing(args, expected, tmp_path, capsys,
                                                             monkeypatch):
    started = record_ray_starts(monkeypatch)
    assert main(["sweep", str(SMOKE), *args, "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and not started


def interrupted_sweep(tmp_path):
    """A sweep run directory as `marlscale sweep` leaves it when stopped early (no Tune run:
    the checks below come before Ray)."""
    import pickle

    from marlscale import runfiles
    from marlscale.runspec import SweepSpec
    from marlscale.sweeps import resume

    run_dir = tmp_path / "sweep"
    run_dir.mkdir()
    spec = SweepSpec.load(SMOKE)
    (run_dir / runfiles.SWEEP_SPEC).write_text(SMOKE.read_text())
    resume.record_fingerprint(run_dir, spec.to_dict())
    (run_dir / runfiles.TUNER).write_bytes(pickle.dumps({"_tune_config": None}))
    return run_dir


def test_a_corrupt_tuner_pkl_is_named_before_ray_starts(tmp_path, capsys, monkeypatch):
    started = record_ray_starts(monkeypatch)
    run_dir = interrupted_sweep(tmp_path)
    (run_dir / "tuner.pkl").write_bytes(b"")
    assert main(["sweep", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{str(run_dir / 'tuner.pkl')!r} is unreadable (it is empty)" in err
    assert "Traceback" not in err and not started
    (run_dir / "tuner.pkl").write_bytes(b"\x80\x04garbage")
    assert main(["sweep", "--resume", str(run_dir)]) == 2
    assert "is unreadable (UnpicklingError" in capsys.readouterr().err and not started


def test_a_swapped_sweep_yaml_is_refused_naming_both_specs(tmp_path, capsys, monkeypatch):
    import yaml
    from marlscale.sweeps import resume

    started = record_ray_starts(monkeypatch)
    run_dir = interrupted_sweep(tmp_path)
    values = yaml.safe_load(SMOKE.read_text())
    values["grid"]["n_agents"] = [4]
    values["experiment"] = "other"
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(values))  # another valid spec
    assert main(["sweep", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "sweep.yaml has changed since the sweep started (started with sha256 " in err
    assert "experiment: 'smoke' -> 'other'" in err and "[4]" in err
    assert "Traceback" not in err and not started
    (run_dir / "sweep.yaml").write_text(SMOKE.read_text())  # the original passes
    assert resume.check_resumable(run_dir).experiment == "smoke"


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "soon"])
def test_resource_wait_must_be_a_finite_number_of_seconds(value, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["sweep", str(SMOKE), "--resource-wait-s", value])
    assert exit.value.code == 2
    assert "--resource-wait-s" in capsys.readouterr().err


def test_evaluate_refuses_a_negative_number_of_env_runners_before_reading_anything(
        tmp_path, capsys, monkeypatch):
    started = record_ray_starts(monkeypatch)
    assert main(["evaluate", str(tmp_path / "nowhere"), "--num-env-runners", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--num-env-runners=-1 is invalid; allowed: an integer >= 0" in err
    assert "Traceback" not in err and not started


# ---- issue #25: every member of each class -----------------------------------------------
def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("args, expected", [
    (["train", "--n-agents", "abc"], "--n-agents: 'abc' is invalid; allowed: an integer >= 1"),
    (["train", "--seed", "x"], "--seed: 'x' is invalid; allowed: an integer >= 0"),
    (["train", "--num-gpus", "nan"], "--num-gpus: nan is invalid; allowed: a finite number >= 0"),
    (["train", "--iterations", "soon"], "--iterations: 'soon' is invalid; allowed: a number > 0"),
    (["evaluate", "ck", "--epsilon", "1.5"], "--epsilon: 1.5 is invalid; allowed: a number in"),
    (["evaluate", "ck", "--num-env-runners", "two"], "--num-env-runners: 'two' is invalid; "
                                                     "allowed: an integer"),
    (["render", "ck", "--out", "a.gif", "--fps", "0"], "--fps: 0 is invalid; allowed: a finite "
                                                       "number > 0"),
    (["rollout", "--episodes", "x" * 5000], "x… is invalid; allowed: an integer >= 1"),
])
def test_every_flag_type_says_what_is_allowed(args, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    line = capsys.readouterr().err.splitlines()[-1]  # after argparse's usage
    assert exit_.value.code == 2 and expected in line and len(line) < 400, line


BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{b}' if b else 'x'] * 10)}]\n"
               for a, b in zip("abcdefg", ["", *"abcdef"]))


def test_a_yaml_alias_bomb_is_refused_in_one_short_line(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    for command in ("train", "sweep"):
        assert main([command, str(bomb), "--run-dir", str(tmp_path / "run")]) == 2
        err = one_error_line(capsys)
        assert f"{bomb}: the spec file expands to more than 100,000 values" in err
    assert main(["train", "--set", "lr=" + BOMB.replace("\n", ", ").join("{}")]) == 2
    assert "--set lr expands to more than 100,000 values" in one_error_line(capsys)


def test_a_huge_value_is_echoed_cut_short(tmp_path, capsys):
    spec = spec_file(tmp_path, "training: {algorithm: " + "x" * 100_000 + "}")
    assert main(["train", str(spec), "--run-dir", str(tmp_path / "run")]) == 2
    err = one_error_line(capsys)
    assert "algorithm='xxxx" in err and "x… is invalid; allowed: iql" in err and len(err) < 600


def test_a_grid_beyond_the_stated_size_is_refused_at_once(tmp_path, capsys):
    """Refused from the axes' sizes alone (no grid point is built: 10^6 of them would take
    hours to validate)."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("experiment: big\nenv_config: {n_agents: 4}\nstop: {iterations: 1}\n"
                     f"grid: {{seed: {list(range(1000))}, training.lr: "
                     f"{[1e-4 * i for i in range(1, 1001)]}}}\n")
    assert main(["sweep", str(sweep), "--run-dir", str(tmp_path / "run")]) == 2
    err = one_error_line(capsys)
    assert "grid={'seed': '1000 values', 'training.lr': '1000 values'} is invalid; allowed: " \
           "at most 2,000 trials (this grid has 1,000,000)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, expected", [
    ("env_config: {n_agents: 4, map_size: 18, max_cycles: 1}",
     "max_cycles=1 is invalid; allowed: None or an integer >= 2"),
    ("training: {learning_starts: 30000}", "learning_starts=30000 is invalid with "
                                           "replay_capacity=20000"),
])
def test_settings_that_would_fail_after_ray_starts_are_refused_before(extra, expected, tmp_path,
                                                                     capsys):
    assert main(["train", str(spec_file(tmp_path, extra)), "--run-dir",
                 str(tmp_path / "run")]) == 2
    assert expected in one_error_line(capsys) and not (tmp_path / "run").exists()


def test_a_state_grid_too_big_for_this_machine_is_refused_with_its_estimate(tmp_path, capsys):
    spec = spec_file(tmp_path, "training: {replay_capacity: 200}").read_text().replace(
        "map_size: 18", "map_size: 18, state_grid: 5000")
    (tmp_path / "spec.yaml").write_text(spec)
    assert main(["train", str(tmp_path / "spec.yaml"), "--run-dir", str(tmp_path / "run")]) == 2
    err = one_error_line(capsys)
    assert ("(n_agents=4, replay_capacity=200, 2 envs) needs about 620.5 GiB (replay 23.3 GiB, "
            "observations 1.2 GiB, learner 596.0 GiB)") in err
    assert "e.g. a smaller batch_size, state_grid or network: the learner alone" in err


def test_rollout_too_big_for_this_machine_is_refused_before_ray_starts(capsys, monkeypatch):
    started = record_ray_starts(monkeypatch)
    assert main(["rollout", "--n-agents", "10000000", "--games", "battle"]) == 2
    err = one_error_line(capsys)
    assert "these rollouts (1 envs, n_agents=10000000, state_grid=8) needs about" in err
    assert not started


def test_an_output_path_that_is_a_folder_is_refused_before_the_work(tmp_path, capsys):
    folder = tmp_path / "out.json"
    folder.mkdir()
    assert main(["evaluate", str(tmp_path / "nowhere"), "--json", str(folder)]) == 2
    assert f"--json '{folder}' is invalid: it is a folder" in one_error_line(capsys)
    gif = tmp_path / "out.gif"
    gif.mkdir()
    assert main(["render", str(tmp_path / "nowhere"), "--out", str(gif)]) == 2
    assert f"--out '{gif}' is invalid: it is a folder" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gif", "out.json"]


def test_corrupt_run_dir_metadata_is_named_before_ray_starts(tmp_path, capsys, monkeypatch):
    started = record_ray_starts(monkeypatch)
    run_dir = interrupted_sweep(tmp_path)
    fingerprint = run_dir / "spec.fingerprint.json"
    for text, problem in (('{"sha256": ', "is not JSON"), ("[1]", "holds a list, not a mapping"),
                          ("{}", "has no sha256 and spec")):
        fingerprint.write_text(text)
        assert main(["sweep", "--resume", str(run_dir)]) == 2
        assert f"{fingerprint}: the spec fingerprint {problem}" in one_error_line(capsys)
    fingerprint.unlink()
    (run_dir / "provenance.json").write_bytes(b"\xff{")
    assert main(["sweep", "--resume", str(run_dir)]) == 2
    assert f"{run_dir / 'provenance.json'}: the provenance record is not UTF-8 text" \
        in one_error_line(capsys)
    train_run = tmp_path / "train"
    train_run.mkdir()
    (train_run / "spec.json").write_bytes(b'{"env": "caf\xe9"}')
    assert main(["train", "--resume", str(train_run)]) == 2
    assert f"{train_run / 'spec.json'}: the run's spec is not UTF-8 text" in one_error_line(capsys)
    assert not started


def test_a_full_disk_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    from marlscale.cli import commands

    def writes_to_a_full_disk(args):  # a real ENOSPC from the kernel, wrapped as Ray wraps
        try:
            with open("/dev/full", "w") as out:
                out.write("x" * 100_000)
        except OSError as error:
            raise RuntimeError("a task failed") from error

    monkeypatch.setitem(commands.COMMANDS, "report", writes_to_a_full_disk)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 1
    err = one_error_line(capsys)
    assert err.startswith(f"marlscale: error: writing under {tmp_path / 'r'}: No space left on "
                          "device (ENOSPC)")
