"""W&B logging of sweeps through Ray's `WandbLoggerCallback`.

Each trial is its own W&B run; its group is experiment/algorithm/game/N (plus any other grid
axis but the seed), so the seeds of one configuration aggregate on the dashboard; env steps are
the x-axis of every metric, as in `marlscale train`'s runs (marlscale/wandb_logging.py).
Offline mode needs no account: the runs land in each trial's directory under `wandb/` and can
be uploaded later with `wandb sync`.

The API key never reaches a runtime_env. Ray's callback puts WANDB_API_KEY into its logging
actors' `runtime_env={"env_vars": ...}`, which Ray's runtime-env agent writes in plain text to
its log (`runtime_env_agent.log`, world-readable under /tmp/ray). Here the logging actors,
which run on the driver's node, read the key from their own environment instead: the local
Ray that `marlscale sweep` starts inherits the driver's, and on a cluster the head node's
(`WANDB_API_KEY` set where `ray start` runs, or `wandb login` there). marlscale never prints,
logs or writes the key.
"""

from __future__ import annotations

import os

import ray
from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor
from ray.air.util.node import _force_on_current_node

from marlscale.wandb_logging import define_x_axis


class _LoggingActor(_WandbLoggingActor):
    """Ray's per-trial logging actor, with env steps as the x-axis of every metric."""

    _x_axis_defined = False

    def _handle_result(self, result):
        if not self._x_axis_defined:  # the first result comes after wandb.init, in run()
            define_x_axis(self._wandb)
            self._x_axis_defined = True
        return super()._handle_result(result)


class SweepWandbLogger(WandbLoggerCallback):
    """One W&B run per trial, grouped per configuration; offline needs no API key."""

    _logger_actor_cls = _LoggingActor

    def __init__(self, project: str, mode: str, group_of, entity: str | None = None):
        kwargs = {"mode": mode}
        if entity:
            kwargs["entity"] = entity
        super().__init__(project=project, **kwargs)
        self._group_of = group_of  # trial config -> group name

    def setup(self, *args, **kwargs):
        if self.kwargs.get("mode") == "offline":
            return  # Ray's setup insists on an API key, which offline runs do not need
        super().setup(*args, **kwargs)

    def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
        if not self._remote_logger_class:  # Ray's, less the runtime_env that carries the key
            self._remote_logger_class = ray.remote(
                num_cpus=0, **_force_on_current_node(), max_restarts=-1, max_task_retries=-1,
            )(self._logger_actor_cls)
        super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)

    def on_experiment_end(self, trials, **info):
        # A trial that an interrupt stopped (Ctrl-C) never got `log_trial_end` (Tune marks it
        # stopped without it): its logging actor would wait for more results, and Ray's
        # callback would wait for that actor for its whole upload timeout (30 minutes) before
        # killing it, W&B run unfinished. Close every run still open now, as a finished
        # trial's (a second end for a run already closing is ignored: its actor has stopped
        # reading); `--resume` logs to the trial's id again.
        for trial in list(self._trial_logging_actors):
            self._signal_logging_actor_stop(trial)
        super().on_experiment_end(trials, **info)

    def log_trial_start(self, trial):
        self.group = self._group_of(trial.config)
        path = str(trial.path)
        if "://" not in path:
            # Local storage: W&B writes straight into the run directory. (Ray's default, the
            # driver's staging folder, is synced there; a run still being flushed when the
            # sweep ends would arrive truncated.) The logging actor runs on the driver's node.
            os.makedirs(path, exist_ok=True)
            self.kwargs["dir"] = path
        super().log_trial_start(trial)
