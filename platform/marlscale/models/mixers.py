"""Mixers: Q_tot from the agents' chosen Q-values, the global state and the agent mask.

Each mixer is `forward(agent_qs [B, K], state [B, S], mask [B, K]) -> q_tot [B]` over slots
0..K-1, K <= N: the learner passes the active prefix only. Masked agents (dead or not controlled
by the policy) contribute nothing: their Q is zeroed before mixing, and a zero input adds
nothing through the monotonic (non-negative) first layer, so leaving out the slots past K
changes nothing but the cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from marlscale.models.slots import SlotTable


class VDNMixer(nn.Module):
    """Value decomposition networks (Sunehag et al. 2018): Q_tot = sum_i Q_i."""

    def __init__(self, n_agents: int, state_dim: int, **_):
        super().__init__()

    def forward(self, agent_qs: torch.Tensor, state: torch.Tensor, mask: torch.Tensor):
        return (agent_qs * mask).sum(-1)


class QMixer(nn.Module):
    """QMIX (Rashid et al. 2018): a monotonic mixing network whose weights come from
    hypernetworks of the global state. |W| keeps dQ_tot/dQ_i >= 0; V(s) is a state bias.
    Two-layer hypernetworks as in PyMARL (sizes and init: `TeamQSettings`)."""

    def __init__(self, n_agents: int, state_dim: int, *, mixing_embed_dim: int,
                 hypernet_embed: int, init: str):
        super().__init__()
        self.n_agents, self.embed = n_agents, mixing_embed_dim
        self.hyper_w1 = nn.Sequential(
            nn.Linear(state_dim, hypernet_embed), nn.ReLU(),
            nn.Linear(hypernet_embed, n_agents * mixing_embed_dim),
        )
        self.hyper_w2 = nn.Sequential(
            nn.Linear(state_dim, hypernet_embed), nn.ReLU(),
            nn.Linear(hypernet_embed, mixing_embed_dim),
        )
        self.hyper_b1 = nn.Linear(state_dim, mixing_embed_dim)
        self.value = nn.Sequential(
            nn.Linear(state_dim, mixing_embed_dim), nn.ReLU(), nn.Linear(mixing_embed_dim, 1)
        )
        if init == "orthogonal":  # PyMARL2's `use_orthogonal` option
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.orthogonal_(layer.weight)
                    nn.init.zeros_(layer.bias)
        # The last layer's outputs i*E..(i+1)*E-1 are slot i's weights: kept as per-slot rows in
        # blocks, so that only the trained slots' rows run and get gradients.
        out = self.hyper_w1[-1]
        self.hyper_w1 = self.hyper_w1[:-1]
        self.w1_weight = SlotTable(out.weight.view(n_agents, mixing_embed_dim, -1))
        self.w1_bias = SlotTable(out.bias.view(n_agents, mixing_embed_dim))

    def forward(self, agent_qs: torch.Tensor, state: torch.Tensor, mask: torch.Tensor,
                with_gain: bool = False):
        """Q_tot [B]; with_gain: also `gain` from the same pass (no gradient through it)."""
        pre, w1, w2 = self._layers(agent_qs, state, mask)
        q_tot = (F.elu(pre) * w2).sum(-1) + self.value(state).squeeze(-1)
        if not with_gain:
            return q_tot
        with torch.no_grad():
            return q_tot, self._gain(pre, w1, w2, mask)

    def gain(self, agent_qs: torch.Tensor, state: torch.Tensor, mask: torch.Tensor):
        """The mean slope dQ_tot/dQ_i over the unmasked agents (VDN's is exactly 1): how much
        of the value's scale the mixer carries instead of the agents' Q-values."""
        return self._gain(*self._layers(agent_qs, state, mask), mask)

    @staticmethod
    def _gain(pre, w1, w2, mask):
        elu_slope = torch.where(pre > 0, torch.ones_like(pre), torch.exp(pre))  # [B, E]
        slope = torch.bmm(w1, (elu_slope * w2).unsqueeze(-1)).squeeze(-1)  # [B, N]
        return (slope * mask).sum() / mask.sum().clamp(min=1.0)

    def _layers(self, agent_qs, state, mask):
        """Pre-activations [B, E] of the hidden layer and the weights |W1| [B, K, E], |W2|."""
        batch, k = agent_qs.shape
        qs = (agent_qs * mask).unsqueeze(1)  # [B, 1, K]
        weight = self.w1_weight.prefix(k).reshape(k * self.embed, -1)
        w1 = F.linear(self.hyper_w1(state), weight, self.w1_bias.prefix(k).reshape(-1))
        w1 = w1.abs().view(batch, k, self.embed)
        pre = torch.bmm(qs, w1).squeeze(1) + self.hyper_b1(state)
        return pre, w1, self.hyper_w2(state).abs()


    def resize_agents(self, n: int, trained: int) -> None:
        """Mix n slots: slots < min(N, n) keep their first-layer hypernetwork rows, new slots
        start at the mean of the `trained` slots' rows (the embeddings' `mean` rule)."""
        self.w1_weight = self.w1_weight.resized(n, trained)
        self.w1_bias = self.w1_bias.resized(n, trained)
        self.n_agents = n


MIXERS: dict[str, type[nn.Module]] = {"vdn": VDNMixer, "qmix": QMixer}
"""Mixer registry: the `mixer` of an algorithm declaration names one of these."""
