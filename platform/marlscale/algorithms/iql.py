"""IQL: Independent Q-Learning (Tan 1993) of each agent on the shared team reward.

Not RLlib's registered "IQL", which is Implicit Q-Learning, an offline method."""

from marlscale.algorithms.spec import AlgorithmSpec

IQL = AlgorithmSpec(
    name="iql",
    summary="independent Q-learning: every agent regresses its own Q on the team reward",
    mixer=None,
    mean_action=None,
    target="double_q",
)
