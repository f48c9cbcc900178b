"""The agent network: one Q-network shared by every agent of a team.

Q_i = f(view_i, e_i[, mean_action_i]) where e_i is a learned embedding of agent slot i (the
paper's "shared network with unique embeddings"). Every agent's Q comes from its own inputs
only, so execution stays decentralized; all agents go through the network in one batched pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from marlscale.models.slots import SlotTable


class AgentQNet(nn.Module):
    """Shared agent Q-network over uint8 views, a slot embedding and an optional mean action.

    Layout after Yang et al. 2018's MFQ network: an observation encoder, a small encoder of the
    mean action, merged into a value head. The view encoder is an MLP over the flattened view
    (XuanCe's MAgent2 configs do the same); at MAgent's 10x10 to 13x13 views it costs ~10x
    less than the reference's 3x3 convolutions, which matters on a CPU learner.
    """

    def __init__(
        self,
        view_shape: tuple[int, ...],
        n_agents: int,
        n_actions: int,
        *,
        mean_action: bool,
        hidden: int,
        embedding_dim: int,
        mean_action_hidden: int,
    ):
        super().__init__()
        view_size = 1
        for dim in view_shape:
            view_size *= int(dim)
        self.view_encoder = nn.Linear(view_size, hidden)
        # nn.Embedding's init, kept in blocks of slots (see models/slots.py).
        self.embedding = SlotTable(nn.Embedding(n_agents, embedding_dim).weight)
        self.mean_action_encoder = (
            nn.Sequential(nn.Linear(n_actions, mean_action_hidden), nn.ReLU())
            if mean_action
            else None
        )
        merged = hidden + embedding_dim + (mean_action_hidden if mean_action else 0)
        self.head = nn.Sequential(
            nn.Linear(merged, hidden), nn.ReLU(), nn.Linear(hidden, n_actions)
        )

    def forward(self, views: torch.Tensor, mean_action: torch.Tensor | None = None) -> torch.Tensor:
        """views: uint8 [B, K, *view_shape] of slots 0..K-1 (K <= N); mean_action: [B, K, A] or
        None -> Q [B, K, A]."""
        return paired_forward((self,), views, mean_action)[0]

    def head_forward(self, encoded: torch.Tensor, mean_action: torch.Tensor | None) -> torch.Tensor:
        """Q [B, K, A] from the view encoder's output [B, K, hidden] (after its ReLU)."""
        batch, n = encoded.shape[:2]
        parts = [encoded, self.embedding.prefix(n).expand(batch, n, -1)]
        if self.mean_action_encoder is not None:
            if mean_action is None:
                raise ValueError("this agent network takes a mean action input; none given")
            parts.append(self.mean_action_encoder(mean_action.float()))
        hidden, out = self.head[0], self.head[2]
        return F.linear(F.linear(torch.cat(parts, dim=-1), hidden.weight, hidden.bias).relu_(),
                        out.weight, out.bias)


def paired_forward(nets: tuple[AgentQNet, ...], views: torch.Tensor,
                   mean_action: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Q [B, K, A] of each of `nets` (networks of one shape: the online and the target) on the
    same inputs. The views are converted to float once, and their first layers run as one
    matmul against the nets' stacked weights: a [B*K, V] x [V, len(nets) * hidden] product
    keeps the cores busier than one per net, and the view batch is read once. Each Q equals
    `net(views, mean_action)`."""
    batch, n = views.shape[:2]
    encoders = [net.view_encoder for net in nets]
    # x/255 folded into the weight: scaling 128x500 weights is cheaper than B*N*500 inputs.
    weight = encoders[0].weight if len(nets) == 1 else torch.cat([e.weight for e in encoders])
    bias = encoders[0].bias if len(nets) == 1 else torch.cat([e.bias for e in encoders])
    encoded = F.linear(views.reshape(batch, n, -1).float(), weight * (1.0 / 255.0), bias).relu_()
    hidden = encoders[0].out_features
    return [net.head_forward(encoded[..., i * hidden:(i + 1) * hidden], mean_action)
            for i, net in enumerate(nets)]
