"""MFQMIX (the paper): the QMIX mixer over mean-field agent Q-values.

Q_tot(s, a) ~ f(Q_1(o_1, a_1, mean_1), ..., Q_n(o_n, a_n, mean_n)) with f monotone, where
mean_i is the mean action of agent i's nearest 10% of team-mates (computed by the env, see
`marlscale/mean_field.py`)."""

from marlscale.algorithms.qmix import MIXER_LR
from marlscale.algorithms.spec import AlgorithmSpec

MFQMIX = AlgorithmSpec(
    name="mfqmix",
    summary="QMIX over mean-field agent Q-values, neighbourhood = nearest 10% of team-mates",
    mixer="qmix",
    mean_action="neighbour",
    target="double_q",
    settings={"mixer_lr": MIXER_LR},  # the QMIX mixer's, for the same reason
)
