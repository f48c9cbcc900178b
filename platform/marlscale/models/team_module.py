"""`TeamQModule`: the RLlib module of one team, holding every agent's Q-network at once.

The team is one RLlib agent id, so one module forward computes all N agents' Q-values in a
single batch, each from that agent's own inputs. The mixer and the target networks are
learner-only (`get_non_inference_attributes`): EnvRunners hold just the agent network.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from marlscale import keys
from marlscale.models.agent_net import AgentQNet
from marlscale.models.mixers import MIXERS

LEARNER_ONLY = ["mixer", "target_agent", "target_mixer"]


class TeamQModule(TorchRLModule, InferenceOnlyAPI):
    """Agent network (+ mixer and targets on the learner) for one team.

    model_config (`algorithms.config.module_config` builds it): ``algorithm`` (a label),
    ``mixer`` (a `MIXERS` name or None), ``target`` (the learner's bootstrap target),
    ``mean_action`` (None, "neighbour" or "team"), the sizes ``hidden``, ``embedding_dim``,
    ``mean_action_hidden``, ``mixing_embed_dim``, ``hypernet_embed``, and ``mixer_init``.
    """

    @override(TorchRLModule)
    def setup(self):
        cfg = self.model_config
        self.algorithm, self.target = cfg["algorithm"], cfg["target"]
        self.mean_action = cfg["mean_action"]
        obs_space = self.observation_space
        views = obs_space[keys.VIEWS]
        self.n_agents = int(views.shape[0])
        self.n_actions = int(self.action_space.nvec[0])
        self.agent = AgentQNet(
            views.shape[1:], self.n_agents, self.n_actions,
            mean_action=self.mean_action is not None, hidden=cfg["hidden"],
            embedding_dim=cfg["embedding_dim"], mean_action_hidden=cfg["mean_action_hidden"],
        )
        # Exploration rate and update counter travel with the weights (and checkpoints).
        self.register_buffer("epsilon", torch.tensor(1.0))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.int64))
        self.state_dim = int(np.prod(obs_space[keys.STATE].shape))
        self.mixer = None
        if cfg["mixer"] is not None:
            self.mixer = MIXERS[cfg["mixer"]](
                self.n_agents, self.state_dim, mixing_embed_dim=cfg["mixing_embed_dim"],
                hypernet_embed=cfg["hypernet_embed"], init=cfg["mixer_init"],
            )
        self.target_agent = copy.deepcopy(self.agent).requires_grad_(False)
        self.target_mixer = (
            copy.deepcopy(self.mixer).requires_grad_(False) if self.mixer is not None else None
        )

    # ---- the pieces the learner and the EnvRunner use ---------------------------------------
    def mean_action_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The agents' mean-action input [B, N, A] (or None for plain Q-learners)."""
        if self.mean_action is None:
            return None
        if self.mean_action == "team":
            team = obs[keys.TEAM_MEAN_ACTION]
            return team.unsqueeze(1).expand(-1, self.n_agents, -1)
        return obs[keys.NEIGHBOUR_MEAN_ACTION]

    def q_values(self, obs: dict[str, torch.Tensor], target: bool = False) -> torch.Tensor:
        """Every agent's Q-values [B, N, A] from the online (or target) agent network."""
        net = self.target_agent if target else self.agent
        return net(obs[keys.VIEWS], self.mean_action_input(obs))

    def state_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mixer's state: the pooled global state, flattened and scaled to [0, 1]."""
        state = obs[keys.STATE]
        return state.reshape(state.shape[0], -1).float() * (1.0 / 255.0)

    def sync_targets(self, tau: float = 1.0) -> None:
        """target <- tau * online + (1 - tau) * target (tau=1: a hard copy)."""
        pairs = [(self.agent, self.target_agent)]
        if self.mixer is not None:
            pairs.append((self.mixer, self.target_mixer))
        with torch.no_grad():
            for online, target in pairs:
                for p, tp in zip(online.parameters(), target.parameters()):
                    tp.mul_(1.0 - tau).add_(p, alpha=tau)

    def grow_embeddings(self, old: int, new: int) -> None:
        """Slots old..new-1 (online and target) start at the mean embedding of slots 0..old-1
        (incremental learning's `embedding_init: mean`)."""
        with torch.no_grad():
            for net in (self.agent, self.target_agent):
                weight = net.embedding.weight
                weight[old:new] = weight[:old].mean(dim=0)

    def greedy_actions(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """argmax_a Q_i for every agent, int64 [B, N]."""
        return self.q_values(obs).argmax(-1)

    def explore_actions(
        self, obs: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Per-agent epsilon-greedy: each agent independently takes a uniform action w.p. eps."""
        greedy = self.greedy_actions(obs)
        random = torch.randint(0, self.n_actions, greedy.shape, generator=generator,
                               device=greedy.device)
        explore = torch.rand(greedy.shape, generator=generator, device=greedy.device)
        return torch.where(explore < self.epsilon, random, greedy)

    # ---- RLlib's forward API --------------------------------------------------------------
    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTIONS: self.greedy_actions(batch[Columns.OBS])}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTIONS: self.explore_actions(batch[Columns.OBS])}

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        # The learner computes Q-values inside its loss, which needs both time steps.
        return {}

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return [name for name in LEARNER_ONLY if getattr(self, name, None) is not None]
