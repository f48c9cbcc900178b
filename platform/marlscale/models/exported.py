"""A team's agent network as one self-contained program: what `marlscale export` writes.

`PolicyNet` is `AgentQNet` rewritten for acting outside Ray: it takes the views of the alive
agents as MAgent2 gives them (float32 [K, H, W, C]), their slot numbers [K] and their mean
actions [K, A], and returns their Q-values [K, A]. It holds the observation preprocessing
(round(255 * v) to uint8, as `envs/global_state.quantize` stores training's views), the
trained slots' embeddings plus their mean (the embedding of every slot past the trained ones,
as `--n-agents` and incremental learning's `embedding_init: mean` give them) and, for MFQ and
MFQMIX, the mean-action encoder. `export_program` traces it with `torch.export`: the file then
needs no Python class to run (docs/export.md says why torch.export).

Every operation is `AgentQNet`'s own, in the same order and on a leading batch of one, so the
Q-values equal the checkpoint module's bit for bit (tests/unit/test_policy.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from marlscale.models.agent_net import AgentQNet


class PolicyNet(nn.Module):
    """Q-values of any number of a team's agents from their views, slots and mean actions."""

    def __init__(self, net: AgentQNet, trained: int):
        """`net`: the team's agent network; `trained`: how many slots (0..trained-1) its
        curriculum stage trained: slots from `trained` on use the mean of their embeddings."""
        super().__init__()
        if not 1 <= trained <= net.embedding.n:
            raise ValueError(f"trained={trained} is invalid; allowed: 1..{net.embedding.n}")
        self.trained = int(trained)
        with torch.no_grad():
            encoder = net.view_encoder
            # x/255 folded into the weight, as `agent_net.paired_forward` does (same values).
            self.register_buffer("view_weight", encoder.weight * (1.0 / 255.0))
            self.register_buffer("view_bias", encoder.bias.detach().clone())
            table = net.embedding.prefix(trained).detach()
            self.register_buffer("embeddings", torch.cat([table, table.mean(0, keepdim=True)]))
            self.mean_action = net.mean_action_encoder is not None
            if self.mean_action:
                linear = net.mean_action_encoder[0]
                self.register_buffer("mean_weight", linear.weight.detach().clone())
                self.register_buffer("mean_bias", linear.bias.detach().clone())
            hidden, out = net.head[0], net.head[2]
            for name, layer in (("hidden", hidden), ("out", out)):
                self.register_buffer(f"{name}_weight", layer.weight.detach().clone())
                self.register_buffer(f"{name}_bias", layer.bias.detach().clone())

    def forward(self, views: torch.Tensor, slots: torch.Tensor,
                mean_action: torch.Tensor) -> torch.Tensor:
        """views float32 [K, H, W, C] (MAgent2's values), slots int64 [K], mean_action float32
        [K, A] (unused without a mean-action input) -> Q float32 [K, A]."""
        k = views.shape[0]
        quantized = (views * 255.0 + 0.5).to(torch.uint8)  # envs/global_state.quantize
        encoded = F.linear(quantized.reshape(1, k, -1).float(), self.view_weight,
                           self.view_bias).relu()
        slot = torch.clamp(slots, max=self.trained)  # past the trained ones: the mean row
        parts = [encoded, self.embeddings[slot].unsqueeze(0)]
        if self.mean_action:
            parts.append(F.linear(mean_action.reshape(1, k, -1).float(), self.mean_weight,
                                  self.mean_bias).relu())
        hidden = F.linear(torch.cat(parts, dim=-1), self.hidden_weight, self.hidden_bias).relu()
        return F.linear(hidden, self.out_weight, self.out_bias)[0]


def export_program(net: AgentQNet, trained: int, view_shape: tuple[int, ...],
                   n_actions: int) -> torch.export.ExportedProgram:
    """`PolicyNet(net, trained)` traced by torch.export for any number K >= 1 of agents."""
    agents = torch.export.Dim("agents", min=1)
    example = (torch.zeros(2, *view_shape), torch.arange(2), torch.zeros(2, n_actions))
    return torch.export.export(PolicyNet(net, trained).eval(), example,
                               dynamic_shapes=({0: agents}, {0: agents}, {0: agents}))
