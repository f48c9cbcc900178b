"""MFQ (Yang et al. 2018): Q(o_i, a_i, mean action) with a Boltzmann value target.

The reference (mlii/mfrl) feeds the whole team's previous mean action; `mean_action` can switch
it to the neighbourhood's. v_MF(s') = sum_a softmax(Q'(s', .)/T)(a) Q'(s', a), T = 0.1."""

from marlscale.algorithms.spec import AlgorithmSpec

MFQ = AlgorithmSpec(
    name="mfq",
    summary="mean-field Q: each agent's Q takes the team's mean action; Boltzmann target",
    mixer=None,
    mean_action="team",
    target="boltzmann",
)
