"""Incremental learning: a growing subset of each learning team is controlled and trained."""

from marlscale.curriculum.callback import IncrementalLearning, apply_stage
from marlscale.curriculum.schedules import Curriculum, CurriculumConfig

__all__ = ["Curriculum", "CurriculumConfig", "IncrementalLearning", "apply_stage"]
