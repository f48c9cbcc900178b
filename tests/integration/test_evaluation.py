"""Checkpoints as results: evaluate, cross-play and render, on real checkpoints and Ray."""

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import marlscale
from marlscale import keys
from marlscale.evaluation import render
from marlscale.evaluation.evaluate import Evaluation

pytestmark = pytest.mark.integration
# `trained`: real checkpoints, trained once per session (tests/integration/conftest.py).


def _figures(report):
    return {k: v for k, v in report.items() if k not in ("wall_s", "num_env_runners")}


def test_evaluation_is_the_same_on_any_number_of_env_runners_and_twice(trained):
    evaluation = Evaluation.prepare(str(trained["h2h"]), episodes=4, seed=3)
    assert {side: c.algorithm for side, c in evaluation.sides.items()} == \
        {"red": "qmix", "blue": "mfq"}  # a head-to-head checkpoint plays its own pair
    spread = evaluation.run(num_env_runners=2)
    assert _figures(spread) == _figures(evaluation.run(num_env_runners=2))
    assert _figures(spread) == _figures(evaluation.run(num_env_runners=0))
    red, blue = spread["sides"]["red"], spread["sides"]["blue"]
    for side in (red, blue):
        stat = side[keys.RETURN_PER_AGENT]
        assert stat["n"] == 4 and stat["ci95"][0] <= stat["mean"] <= stat["ci95"][1]
        assert {"kills", "deaths", "survivors", "win_rate", "draw_rate"} <= set(side)
    assert red[keys.REWARD_DIFFERENCE]["mean"] == pytest.approx(
        red[keys.RETURN_PER_AGENT]["mean"] - blue[keys.RETURN_PER_AGENT]["mean"])
    assert red["win_rate"] + blue["win_rate"] + red["draw_rate"] == pytest.approx(1.0)
    # The seed sets the maps and every random draw: against the random team, it shows.
    seeded = [Evaluation.prepare(str(trained["h2h"]), opponent="random", episodes=4,
                                 seed=seed).run(0) for seed in (3, 3, 4)]
    assert _figures(seeded[0]) == _figures(seeded[1]) != _figures(seeded[2])


def test_cross_play_a_red_policy_plays_blue_against_random_and_another_checkpoint(trained):
    swapped = Evaluation.prepare(f"{trained['h2h']}:red", opponent=f"{trained['h2h']}:blue",
                                 side="blue", episodes=2)
    assert swapped.sides["blue"].trained_side == "red"
    assert swapped.sides["red"].trained_side == "blue"
    report = swapped.run(0)
    assert report["sides"]["blue"]["algorithm"] == "qmix"
    against_random = Evaluation.prepare(f"{trained['h2h']}:blue", opponent="random",
                                        episodes=2).run(0)
    assert against_random["sides"]["red"]["algorithm"] == "random"
    assert against_random["sides"]["blue"]["trained_side"] == "blue"


def test_evaluate_cli_prints_a_table_and_writes_the_same_json_twice(trained, tmp_path):
    outputs = []
    for name in ("a.json", "b.json"):
        done = marlscale("evaluate", str(trained["battle6"]), "--episodes", "3", "--seed", "5",
                         "--json", str(tmp_path / name), "--num-cpus", "2")
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(json.loads((tmp_path / name).read_text()))
    assert "return/agent" in done.stdout and "win rate" in done.stdout
    assert _figures(outputs[0]) == _figures(outputs[1])
    assert outputs[0]["sides"]["blue"]["algorithm"] == "random"


@pytest.mark.parametrize("case, expected", [
    ("not_a_checkpoint", "is not a checkpoint"),
    ("missing", "does not exist"),
    ("other_game", "is a checkpoint of adversarial_pursuit and CHECKPOINT"),
    ("other_n", "trained at N=6 red, 6 blue and CHECKPOINT"),
    ("no_such_team", "holds no team 'green'; allowed: red, blue"),
    ("episodes", "--episodes: 0 is invalid; allowed: an integer >= 1"),
    ("n_agents", "--n-agents: 0 is invalid; allowed: an integer >= 1"),
    ("map_rules", "--n-agents 300 is invalid for '"),
    ("json_dir", "folder"),
])
def test_bad_evaluate_input_fails_before_ray_with_a_clear_line(trained, tmp_path, case,
                                                               expected, cli_in_process):
    """In-process (`cli_in_process`: a subprocess per case cost its imports); the render
    test's refusal runs through a real `marlscale` process."""
    h2h = str(trained["h2h"])
    args = {
        "not_a_checkpoint": [str(tmp_path)],
        "missing": [str(tmp_path / "nope")],
        "other_game": [h2h, "--opponent", str(trained["pursuit"])],
        "other_n": [h2h, "--opponent", str(trained["battle6"])],
        "no_such_team": [f"{h2h}:green"],
        "episodes": [h2h, "--episodes", "0"],
        "n_agents": [h2h, "--n-agents", "0"],
        "map_rules": [str(trained["pursuit"]), "--n-agents", "300"],  # its map is 14 x 14
        "json_dir": [h2h, "--json", str(tmp_path / "missing" / "out.json")],
    }[case]
    done = cli_in_process("evaluate", *args)
    assert done.code == 2, done.err[-2000:]
    assert expected in done.err
    assert "Traceback" not in done.err and not done.ray_started
    assert not (tmp_path / "missing").exists()


def test_evaluate_at_another_n_resizes_both_policies(trained):
    """Cross-play at N=7 of a head-to-head pair trained at N=4, and the N=6 battle policy at 3."""
    report = Evaluation.prepare(str(trained["h2h"]), episodes=2, n_agents=7).run(0)
    assert report["n_agents"] == {"red": 7, "blue": 7}
    for side in ("red", "blue"):
        assert report["sides"][side]["trained_n_agents"] == 4
        assert report["sides"][side]["n_active"] == 7
        assert report["sides"][side][keys.RETURN_PER_AGENT]["n"] == 2
    small = Evaluation.prepare(str(trained["battle6"]), episodes=1, n_agents=3).run(0)
    assert small["n_agents"] == {"red": 3, "blue": 3}
    assert small["sides"]["blue"]["algorithm"] == "random"


def _cell_colours(path, info):
    """Per frame, the colour of every map cell's centre pixel, as an [H, W, 3] array."""
    from PIL import Image

    top, left = info["map_origin"]
    cell, size = info["cell"], info["map_size"]
    centres = np.arange(size) * cell + cell // 2
    frames = []
    with Image.open(path) as gif:
        for index in range(gif.n_frames):
            gif.seek(index)
            pixels = np.asarray(gif.convert("RGB"))
            frames.append(pixels[top + centres][:, left + centres])
    return frames


def _count(cells, colour):
    return int((cells == np.array(colour, dtype=np.uint8)).all(-1).sum())


def test_render_draws_what_a_person_would_see(trained, tmp_path):
    out = tmp_path / "episode.gif"
    info = render.render(str(trained["h2h"]), out, steps=25, seed=2)
    frames = _cell_colours(out, info)
    assert info["frames"] == len(frames) == 26  # the reset and 25 steps
    for cells, (red_alive, blue_alive) in zip(frames, info["alive"]):
        assert _count(cells, render.TEAM_COLOURS[0]) == red_alive
        assert _count(cells, render.TEAM_COLOURS[1]) == blue_alive
    assert info["alive"][0] == [4, 4]


def test_render_marks_the_agents_a_curriculum_stage_leaves_random(trained, tmp_path):
    out = tmp_path / "incremental.gif"
    info = render.render(str(trained["incremental"]), out, steps=5)
    assert info["sides"]["red"]["n_active"] == 1
    first = _cell_colours(out, info)[0]
    assert _count(first, render.TEAM_COLOURS[0]) == 1  # the one trained agent
    assert _count(first, render.UNTRAINED_COLOURS[0]) == 3  # left random by the stage
    assert _count(first, render.TEAM_COLOURS[1]) == 4  # the random team, all present


def test_render_cli_writes_a_gif_and_refuses_a_missing_folder(trained, tmp_path):
    done = marlscale("render", str(trained["pursuit"]), "--steps", "10", "--out",
                     str(tmp_path / "pursuit.gif"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "pursuit.gif").stat().st_size > 0
    done = marlscale("render", str(trained["pursuit"]), "--out",
                     str(tmp_path / "nowhere" / "x.gif"), timeout=120)
    assert done.returncode == 2 and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_one_minute_league_fills_every_cell_of_the_matrix_and_resumes(tmp_path):
    import pandas as pd

    run_dir = tmp_path / "league"
    spec = Path(__file__).resolve().parents[2] / "tune_specs" / "league" / "smoke.yaml"
    done = marlscale("league", str(spec), "--run-dir", str(run_dir), "--num-cpus", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    league = pd.read_csv(run_dir / "league.csv")
    cells = {(r.algorithm, r.column_algorithm) for r in league.itertuples()}
    assert cells == {("qmix", "mfq"), ("mfq", "qmix"), ("qmix", "random"), ("mfq", "random")}
    assert (league["episodes"] == 6).all()  # 3 episodes on each side
    assert league["ci95_low"].le(league["reward_difference"]).all()
    pair = league.set_index(["algorithm", "column_algorithm"])["reward_difference"]
    assert pair["qmix", "mfq"] == pytest.approx(-pair["mfq", "qmix"])
    assert (league["seeds"] == 1).all() and league["seed_ci95_low"].isna().all()  # one seed
    episodes = pd.read_csv(run_dir / "episodes.csv")  # what the tables are computed from
    assert len(episodes) == league["episodes"].sum()
    assert episodes.groupby(["algorithm", "opponent_algorithm"])["reward_difference"].mean() \
        .to_dict() == pytest.approx(pair.to_dict(), abs=1e-5)  # league.csv keeps 6 digits
    ratings = pd.read_csv(run_dir / "ratings.csv")
    assert sorted(ratings["algorithm"]) == ["mfq", "qmix"]
    assert {"vs_random_reward_difference", "ci95_low", "ci95_high"} <= set(ratings.columns)
    curves = pd.read_csv(run_dir / "training_curves.csv")
    assert curves["training_iteration"].tolist() == [1, 2, 3]
    assert curves["pair"].unique().tolist() == ["qmix-vs-mfq"]
    assert curves["reward_difference"].notna().all()
    trial = pd.read_csv(run_dir / "trials.csv").iloc[0]
    assert (trial["red_algorithm"], trial["blue_algorithm"]) == ("qmix", "mfq")
    assert trial["return_per_agent"] == trial["red_return_per_agent"]
    assert "ratings (mean reward difference" in done.stdout
    # The league's report: the matrix as a heat map and the pair's reward difference curve.
    report = (run_dir / "report" / "report.md").read_text()
    assert f"report: {run_dir / 'report' / 'report.md'}" in done.stdout
    assert "1 trials (mfq, qmix; N = 4" in report  # both teams' learners
    for figure in ("league", "head_to_head", "throughput"):
        assert f"]({figure}.png)" in report and (run_dir / "report" / f"{figure}.png").stat() \
            .st_size > 10_000
    assert "| qmix     | both   | mfq        |" in report
    # --resume: finished trials are not re-run; the cross-play comes out the same.
    before = (run_dir / "league.csv").read_text()
    again = marlscale("league", "--resume", str(run_dir), "--num-cpus", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run_dir / "league.csv").read_text() == before
    assert pd.read_csv(run_dir / "training_curves.csv")["training_iteration"].tolist() == [1, 2, 3]
