"""VDN (Sunehag et al. 2018): Q_tot = sum_i Q_i, trained on the team reward."""

from marlscale.algorithms.spec import AlgorithmSpec

VDN = AlgorithmSpec(
    name="vdn",
    summary="value decomposition: Q_tot is the sum of the agents' Q-values",
    mixer="vdn",
    mean_action=None,
    target="double_q",
)
