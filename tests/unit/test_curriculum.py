"""Curriculum schedules (no Ray): linear growth on schedule, adaptive triggers, state."""

from __future__ import annotations

import re

import pytest
from marlscale.curriculum import Curriculum, CurriculumConfig


def linear(**overrides) -> Curriculum:
    config = CurriculumConfig.from_dict({"schedule": "linear", "start": 2, "batch": 3,
                                         "every": 4, **overrides})
    return Curriculum(config, {"predator": 10})


def test_linear_grows_a_batch_every_k_iterations_until_the_whole_team():
    curriculum = linear()
    assert curriculum.final_stage == 3  # 2 -> 5 -> 8 -> 10
    seen = []
    for iteration in range(1, 21):
        curriculum.advance(iterations=iteration, env_steps=iteration * 100, metric=None)
        seen.append(curriculum.n_active()["predator"])
    # After iteration i the next iteration runs with stage i // 4.
    assert seen == [2, 2, 2, 5, 5, 5, 5, 8, 8, 8, 8, 10, 10, 10, 10, 10, 10, 10, 10, 10]


def test_linear_in_env_steps_is_a_pure_function_of_the_counters():
    curriculum = linear(unit="env_steps", every=1000)
    curriculum.advance(iterations=1, env_steps=2500, metric=None)
    assert curriculum.stage == 2 and curriculum.n_active() == {"predator": 8}
    fresh = linear(unit="env_steps", every=1000)  # e.g. a restored Algorithm
    assert fresh.linear_stage(iterations=1, env_steps=2500) == 2


def adaptive(**overrides) -> Curriculum:
    config = CurriculumConfig.from_dict({"schedule": "adaptive", "start": 2, "batch": 2,
                                         "window": 6, **overrides})
    return Curriculum(config, {"predator": 6})


def test_adaptive_grows_when_the_return_reaches_the_threshold():
    curriculum = adaptive(threshold=1.0)
    for iteration, value in enumerate([0.0, 0.2, 0.5, 0.8, 1.0, 1.2], start=1):
        assert not curriculum.advance(iterations=iteration, env_steps=0, metric=value)
    for iteration, value in enumerate([1.4, 1.6, 1.8], start=7):
        changed = curriculum.advance(iterations=iteration, env_steps=0, metric=value)
        if changed:
            break
    assert curriculum.stage == 1 and curriculum.n_active() == {"predator": 4}
    assert iteration == 8  # the 6-iteration mean first reaches 1.0 at iteration 8
    assert curriculum.history == [] and curriculum.stage_started == 8


def test_adaptive_triggers_on_a_synthetic_plateau_but_not_while_improving():
    rising = adaptive(plateau=0.05)
    for iteration in range(1, 30):
        rising.advance(iterations=iteration, env_steps=0, metric=0.1 * iteration)
    assert rising.stage == 0
    flat = adaptive(plateau=0.05)
    curve = [0.1 * i for i in range(1, 7)] + [0.6 + 0.001 * (i % 2) for i in range(12)]
    grew_at = None
    for iteration, value in enumerate(curve, start=1):
        if flat.advance(iterations=iteration, env_steps=0, metric=value):
            grew_at = iteration
            break
    # The window first lies wholly on the plateau at iteration 12; it is flat from 10 on.
    assert grew_at is not None and 9 <= grew_at <= 12
    assert flat.stage == 1


def test_adaptive_respects_min_iterations_and_stops_at_the_whole_team():
    curriculum = adaptive(threshold=0.0, min_iterations=10)
    grown = [i for i in range(1, 40)
             if curriculum.advance(iterations=i, env_steps=0, metric=1.0)]
    assert grown == [10, 20] and curriculum.stage == curriculum.final_stage == 2
    assert curriculum.n_active() == {"predator": 6}


def test_an_adaptive_stage_that_never_plateaus_still_ends_at_its_maximum_length():
    """A return that keeps improving never triggers the plateau; max_env_steps ends each
    stage anyway, counted from the stage's own start (100 env steps per iteration)."""
    curriculum = adaptive(plateau=0.01, max_env_steps=2_000)
    grown = [i for i in range(1, 60)
             if curriculum.advance(iterations=i, env_steps=100 * i, metric=float(i))]
    assert grown == [20, 40] and curriculum.stage == curriculum.final_stage


def test_an_adaptive_stage_runs_at_least_its_minimum_length():
    """A flat return plateaus at once; min_env_steps holds each stage for 1,500 env steps."""
    curriculum = adaptive(plateau=0.01, min_env_steps=1_500)
    grown = [i for i in range(1, 60)
             if curriculum.advance(iterations=i, env_steps=100 * i, metric=1.0)]
    assert grown == [15, 30]
    restored = adaptive(plateau=0.01, min_env_steps=1_500)
    half = adaptive(plateau=0.01, min_env_steps=1_500)
    for i in range(1, 20):
        half.advance(iterations=i, env_steps=100 * i, metric=1.0)
    restored.set_state(half.get_state())  # mid-stage: the stage's start in env steps travels
    assert restored.get_state()["stage_started_env_steps"] == 1_500
    assert [i for i in range(20, 60)
            if restored.advance(iterations=i, env_steps=100 * i, metric=1.0)] == [30]


def test_state_round_trip_resumes_at_the_same_stage():
    curriculum = adaptive(threshold=1.0)
    for iteration in range(1, 10):
        curriculum.advance(iterations=iteration, env_steps=0, metric=2.0 if iteration > 3 else 0)
    restored = adaptive(threshold=1.0)
    restored.set_state(curriculum.get_state())
    assert restored.stage == curriculum.stage and restored.history == curriculum.history
    assert restored.n_active() == curriculum.n_active()


def test_no_schedule_keeps_every_agent_or_the_fixed_count():
    assert Curriculum(CurriculumConfig(), {"red": 12}).n_active() == {"red": 12}
    assert Curriculum(CurriculumConfig(), {"red": 12}, fixed_n_active=5).n_active() == {"red": 5}


@pytest.mark.parametrize("values, message", [
    ({"schedule": "exponential"}, "curriculum.schedule='exponential' is invalid; allowed: none"),
    ({"schedule": "linear", "batch": 0}, "curriculum.batch=0 is invalid; allowed: an integer"),
    ({"schedule": "linear", "unit": "episodes"}, "curriculum.unit='episodes' is invalid"),
    ({"schedule": "adaptive"}, "curriculum.threshold=None is invalid"),
    ({"schedule": "linear", "embedding_init": "zero"}, "curriculum.embedding_init='zero'"),
    ({"speed": 2}, "curriculum.speed is unknown; allowed: schedule"),
    ({"schedule": "adaptive", "threshold": 1, "window": 1}, "curriculum.window=1 is invalid"),
    ({"schedule": "linear", "reward_scope": "trained"},
     "curriculum.reward_scope='trained' is invalid; allowed: team, active"),
    ({"schedule": "linear", "inactive": "copy"},
     "curriculum.inactive='copy' is invalid; allowed: random, policy"),
    ({"reward_scope": "active"}, "curriculum.reward_scope='active' is invalid; allowed: 'team' "
                                 "with schedule 'none' (every agent is trained, so it would have "
                                 "no effect), or a schedule (linear, adaptive)"),
    ({"inactive": "policy"}, "curriculum.inactive='policy' is invalid; allowed: 'random' with "
                             "schedule 'none'"),
    ({"schedule": "adaptive", "plateau": 0.1, "min_env_steps": 50000, "max_env_steps": 20000},
     "curriculum.min_env_steps=50000 is invalid; allowed: at most curriculum.max_env_steps "
     "(20000)"),
    ({"schedule": "adaptive", "plateau": 0.1, "max_env_steps": 0},
     "curriculum.max_env_steps=0 is invalid"),
])
def test_bad_curriculum_settings_name_the_key_and_value(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CurriculumConfig.from_dict(values)


def test_start_larger_than_the_team_is_rejected():
    config = CurriculumConfig.from_dict({"schedule": "linear", "start": 9})
    with pytest.raises(ValueError, match=r"curriculum\.start=9 is invalid; allowed: 1\.\.8"):
        config.validate(team_size=8)
