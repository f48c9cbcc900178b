"""QMIX (Rashid et al. 2018): a monotonic hypernetwork mixer over the global state."""

from marlscale.algorithms.spec import AlgorithmSpec

QMIX = AlgorithmSpec(
    name="qmix",
    summary="monotonic mixing of the agents' Q-values, conditioned on the global state",
    mixer="qmix",
    mean_action=None,
    target="double_q",
)
