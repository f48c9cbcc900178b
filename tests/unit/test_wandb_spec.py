"""The `wandb:` key of `marlscale train` specs (no Ray, no W&B run): checked like a sweep's,
named the same way, overridden by --wandb-mode / --wandb-project."""

from __future__ import annotations

import pytest
from marlscale.cli import main
from marlscale.cli.commands import train_spec as _train_spec
from marlscale.cli.flags import parser as _parser
from marlscale.runspec import SweepSpec, TrainSpec
from marlscale.wandb_logging import resolve_mode

HEAD_TO_HEAD = {"env": "battle", "env_config": {"n_agents": 6, "opponent": "learned"},
                "training": {"algorithm": "qmix", "opponent_algorithm": "mfq"}, "seed": 3}


@pytest.mark.parametrize("wandb, message", [
    ({"mode": "cloud"}, "train.yaml: wandb.mode='cloud' is invalid; allowed: auto, offline, "
                        "online, disabled"),
    ({"api_key": "x"}, "train.yaml: key 'wandb.api_key' is unknown; allowed: project, mode, "
                       "entity"),
    ({"project": 3}, "train.yaml: wandb.project=3 is invalid; allowed: a string"),
    ({"entity": None}, "train.yaml: wandb.entity=None is invalid; allowed: a string"),
    ("offline", "train.yaml: wandb='offline' is invalid; allowed: a mapping"),
])
def test_bad_wandb_settings_fail_naming_key_value_and_allowed(wandb, message):
    with pytest.raises(ValueError) as error:
        TrainSpec.from_dict({"wandb": wandb}, source="train.yaml")
    assert str(error.value) == message


def test_good_wandb_settings_and_run_names():
    spec = TrainSpec.from_dict({"wandb": {"project": "p", "mode": "offline", "entity": "e"}})
    assert spec.wandb == {"project": "p", "mode": "offline", "entity": "e"}
    assert TrainSpec().wandb_names() == ("train/qmix/adversarial_pursuit/N25",
                                         "qmix_N25_seed0")
    assert TrainSpec.from_dict(HEAD_TO_HEAD).wandb_names() == ("train/qmix-vs-mfq/battle/N6",
                                                               "qmix-vs-mfq_N6_seed3")


def test_auto_is_online_only_with_an_api_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    assert resolve_mode("auto") == "online" and resolve_mode("offline") == "offline"


def test_flags_override_the_spec(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("wandb: {project: p, mode: online, entity: e}\n")
    args = _parser().parse_args(["train", str(path), "--wandb-mode", "disabled",
                                 "--wandb-project", "q"])
    assert _train_spec(args).wandb == {"project": "q", "mode": "disabled", "entity": "e"}
    assert _train_spec(_parser().parse_args(["train", str(path)])).wandb == {
        "project": "p", "mode": "online", "entity": "e"}


def test_a_bad_wandb_mode_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--wandb-mode", "cloud"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "argument --wandb-mode: invalid choice: 'cloud' (choose from " in err
    assert all(mode in err for mode in ("auto", "offline", "online", "disabled"))


def test_sweep_trials_do_not_log_through_their_train_spec():
    spec = SweepSpec.from_dict({"experiment": "t", "grid": {"seed": [0]},
                                "stop": {"iterations": 1}, "wandb": {"mode": "online"}})
    assert spec.train_spec(spec.points()[0]).wandb == {"mode": "disabled"}
