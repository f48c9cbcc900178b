"""QMIX (Rashid et al. 2018): a monotonic hypernetwork mixer over the global state."""

from marlscale.algorithms.spec import AlgorithmSpec

MIXER_LR = 1e-4
"""A fifth of the agents' lr (issue #12's ablation: +31.2 -> +36.4 at N=25)."""

QMIX = AlgorithmSpec(
    name="qmix",
    summary="monotonic mixing of the agents' Q-values, conditioned on the global state",
    mixer="qmix",
    mean_action=None,
    target="double_q",
    # A mixer as fast as the agents takes the value's scale (dQ_tot/dQ_i ~4.6 at N=25) and
    # leaves the agents' Q-values compressed: docs/algorithms/qmix.md#ablation.
    settings={"mixer_lr": MIXER_LR},
)
