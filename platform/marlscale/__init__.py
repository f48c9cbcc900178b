"""marlscale: multi-agent RL at scale on Ray (MAgent2 team envs, QMIX-family learners)."""

__version__ = "0.1.0"
