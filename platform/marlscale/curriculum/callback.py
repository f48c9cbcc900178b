"""`IncrementalLearning`: the RLlib callback that drives the curriculum inside training.

It runs in the Algorithm (under Tune too), so it reaches every EnvRunner: the local one, the
remote ones and any evaluation runners. It applies the current stage at start-up, advances the
schedule after every training iteration, re-applies the stage when EnvRunners are recreated and
after a checkpoint is loaded, and adds `curriculum/...` (schedule, stage, n_active) to every
result row. The stage itself lives in the Algorithm's checkpointed state (`TeamQ.curriculum`).
"""

from __future__ import annotations

from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from marlscale import keys

RESULT_KEY = "curriculum"


def _set_active(n_active: dict[str, int]):
    def apply(runner) -> None:
        if getattr(runner, "env", None) is None:  # a local runner without envs
            return
        for env in runner.team_envs:
            for team, n in n_active.items():
                env.set_active(n, team)
    return apply


def apply_stage(algorithm, env_runner_group=None, indices: list[int] | None = None) -> None:
    """Set every (or the given) EnvRunner's envs to the curriculum's current active counts."""
    curriculum = algorithm.curriculum
    if not curriculum.enabled:
        return
    apply = _set_active(curriculum.n_active())
    groups = [env_runner_group] if env_runner_group is not None else [
        algorithm.env_runner_group, getattr(algorithm, "eval_env_runner_group", None)]
    for group in groups:
        if group is None:
            continue
        group.foreach_env_runner(apply, local_env_runner=True, remote_worker_ids=indices)


def grow_embeddings(algorithm, before: dict[str, int], after: dict[str, int]) -> None:
    """Start the newly active slots' embeddings at the mean of the trained slots' embeddings."""
    def assign(learner) -> None:
        for team, old in before.items():
            new = after[team]
            if new <= old or old == 0:
                continue
            learner.module[team].unwrapped().grow_embeddings(old, new)

    algorithm.learner_group.foreach_learner(assign)
    algorithm.env_runner_group.sync_weights(
        from_worker_or_learner_group=algorithm.learner_group, inference_only=True
    )


class IncrementalLearning(RLlibCallback):
    """Drives `TeamQ.curriculum` (see marlscale.curriculum.schedules)."""

    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        apply_stage(algorithm)

    def on_train_result(self, *, algorithm, result: dict[str, Any], **kwargs) -> None:
        curriculum = algorithm.curriculum
        result[RESULT_KEY] = curriculum.report()  # the stage this iteration trained with
        team = next(iter(curriculum.team_sizes))
        metric = result.get("episodes", {}).get(team, {}).get(keys.RETURN_PER_AGENT)
        before = curriculum.n_active()
        changed = curriculum.advance(
            iterations=int(result["training_iteration"]),
            env_steps=int(algorithm.counters[keys.ENV_STEPS]),
            metric=metric,
        )
        if changed:
            if curriculum.config.embedding_init == "mean":
                grow_embeddings(algorithm, before, curriculum.n_active())
            apply_stage(algorithm)

    def on_env_runners_recreated(self, *, algorithm, env_runner_group, env_runner_indices,
                                 is_evaluation, **kwargs) -> None:
        apply_stage(algorithm, env_runner_group, env_runner_indices)

    def on_checkpoint_loaded(self, *, algorithm, **kwargs) -> None:
        apply_stage(algorithm)
