"""`SweepTrial`: the Tune trainable of a sweep (the `TeamQ` Algorithm of one grid point), its
warm start (a spec's `warm_start`: sweeps/warm_start.py), and the repair of a checkpoint that
Tune deleted while a killed driver's state still names it."""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

from marlscale.algorithms.algorithm import TeamQ
from marlscale.runspec.sweep import SPEC_KEY, WARM_START_KEY, SweepSpec

logger = logging.getLogger(__name__)


def _algorithm_config(config):
    if isinstance(config, dict) and SPEC_KEY in config:
        spec, point = SweepSpec.of_trial(config)
        return spec.train_spec(point).algorithm_config()
    return config


class SweepTrial(TeamQ):
    """A Tune trainable: the TeamQ Algorithm of one grid point of a sweep."""

    def __init__(self, config=None, **kwargs):
        super().__init__(config=_algorithm_config(config), **kwargs)
        # A warm-started trial's source, loaded before its first step unless Tune restores
        # the trial's own checkpoint first (a resumed or retried trial): `restore` drops it.
        self._warm_start = config.get(WARM_START_KEY) if isinstance(config, dict) else None
        self._trial_spec = SweepSpec.of_trial(config) if self._warm_start else None

    def step(self):
        if self._warm_start is not None:
            self._start_warm()
        return super().step()

    def _start_warm(self) -> None:
        """Set the team modules to the source checkpoint's weights (train.py's warm start:
        shared network kept, slot embeddings resized, new slots at the trained ones' mean)."""
        from marlscale.train import check_warm_start

        spec, point = self._trial_spec
        source, self._warm_start = self._warm_start, None
        check_warm_start(spec.train_spec(point), source["checkpoint"],
                         f"warm_start: source trial {source['trial']}: checkpoint").apply(self)
        logger.info("warm start from %s (source trial %s, %s env steps)", source["checkpoint"],
                    source["trial"], source["env_steps"])

    @classmethod
    def default_resource_request(cls, config):
        return super().default_resource_request(_algorithm_config(config))

    def restore(self, checkpoint_path):
        from ray import tune

        # Tune passes a _TrainingResult (checkpoint + metrics); callers a Checkpoint or a path.
        checkpoint = getattr(checkpoint_path, "checkpoint", checkpoint_path)
        if isinstance(checkpoint, (str, Path)):
            checkpoint = tune.Checkpoint.from_directory(str(checkpoint))
        refill_deleted_checkpoint(checkpoint.filesystem, checkpoint.path)
        self._warm_start = None  # the trial's own checkpoint: its weights, not the source's
        return super().restore(checkpoint_path)


_CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")  # runfiles.TRIAL_CHECKPOINT_GLOB


def refill_deleted_checkpoint(filesystem, path: str) -> str | None:
    """Put the trial's next surviving checkpoint where a deleted one is expected; its source.

    Tune keeps a trial's last `num_to_keep` checkpoints and deletes older ones as soon as a new
    one is registered, but writes the experiment state (what `--resume` reads) only every few
    seconds. A driver killed in between leaves a state that points at a deleted checkpoint,
    and Tune would fail that trial on every retry. The trial's later checkpoints from the
    same run are still there: the oldest of them holds the state the trial reached next (its
    iteration and counters come back with it), so it is copied into the expected place and
    the trial continues from there. Returns None when nothing was missing or nothing can
    replace it (Tune then raises its own error).
    """
    from pyarrow import fs

    path = path.rstrip("/")
    parent, name = posixpath.split(path)
    match = _CHECKPOINT_DIR.fullmatch(name)
    if not match or filesystem.get_file_info(path).type != fs.FileType.NotFound:
        return None
    later = []
    for info in filesystem.get_file_info(fs.FileSelector(parent, allow_not_found=True)):
        found = _CHECKPOINT_DIR.fullmatch(info.base_name)
        if found and info.type == fs.FileType.Directory and int(found[1]) > int(match[1]):
            later.append((int(found[1]), info.path))
    if not later:
        return None
    source = min(later)[1]
    fs.copy_files(source, path, source_filesystem=filesystem, destination_filesystem=filesystem)
    logger.warning("%s was deleted (Tune's num_to_keep) after the last saved experiment state "
                   "named it; continuing the trial from its next checkpoint, %s", path, source)
    return source
