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
from marlscale.models.agent_net import AgentQNet, paired_forward
from marlscale.models.mixers import MIXERS
from marlscale.models.runtime import keep_freed_memory

LEARNER_ONLY = ["mixer", "target_agent", "target_mixer"]


def active_width(obs: dict[str, Any]) -> int:
    """The most active agents of any row of a team observation batch (the active slots are a
    prefix, so this is the width of the columns the policy needs); N without an active mask."""
    views = obs[keys.VIEWS]
    if keys.ACTIVE not in obs:
        return int(views.shape[1])
    return int(obs[keys.ACTIVE].sum(-1).max()) if views.shape[0] else 0


def trim_agents(obs: dict[str, Any], width: int) -> dict[str, Any]:
    """The batch with its per-agent columns and masks cut to slots 0..width-1."""
    per_agent = (*keys.PER_AGENT_KEYS, keys.ALIVE, keys.ACTIVE)
    return {key: value[:, :width] if key in per_agent else value for key, value in obs.items()}


class TeamQModule(TorchRLModule, InferenceOnlyAPI):
    """Agent network (+ mixer and targets on the learner) for one team.

    model_config (`algorithms.config.module_config` builds it): ``algorithm`` (a label),
    ``mixer`` (a `MIXERS` name or None), ``target`` (the learner's bootstrap target),
    ``mean_action`` (None, "neighbour" or "team"), the sizes ``hidden``, ``embedding_dim``,
    ``mean_action_hidden``, ``mixing_embed_dim``, ``hypernet_embed``, and ``mixer_init``.
    """

    @override(TorchRLModule)
    def setup(self):
        keep_freed_memory()  # every process that runs the networks builds a module first
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
            return team.unsqueeze(1).expand(-1, obs[keys.VIEWS].shape[1], -1)
        return obs[keys.NEIGHBOUR_MEAN_ACTION]

    def q_values(self, obs: dict[str, torch.Tensor], target: bool = False) -> torch.Tensor:
        """The Q-values [B, K, A] of slots 0..K-1 (K: the width of the per-agent columns, N
        or the active prefix) from the online (or target) agent network."""
        net = self.target_agent if target else self.agent
        return net(obs[keys.VIEWS], self.mean_action_input(obs))

    def online_and_target_q_values(
            self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """`q_values(obs)` and `q_values(obs, target=True)` from one pass over the inputs (the
        two first layers as one matmul: `agent_net.paired_forward`); equal to the two calls."""
        online, target = paired_forward((self.agent, self.target_agent), obs[keys.VIEWS],
                                        self.mean_action_input(obs))
        return online, target

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
                params, targets = list(online.parameters()), list(target.parameters())
                if not params:  # VDN's mixer
                    continue
                torch._foreach_mul_(targets, 1.0 - tau)
                torch._foreach_add_(targets, params, alpha=tau)

    def grow_embeddings(self, old: int, new: int) -> None:
        """Slots old..new-1 (online and target) start at the mean embedding of slots 0..old-1
        (incremental learning's `embedding_init: mean`)."""
        for net in (self.agent, self.target_agent):
            table = net.embedding
            table.fill(old, new, table.prefix(old).detach().mean(dim=0))

    def resize_agents(self, n: int, trained: int | None = None, init: str = "mean") -> None:
        """Continue this policy at population size n (the agent network is shared; only the
        slot embeddings and QMIX's per-slot hypernetwork rows depend on N): slots <
        min(N, n) keep theirs, new slots start at the mean of the first `trained` slots'
        (`init="mean"`, incremental learning's rule) or as freshly initialised (`"initialised"`).
        Online and target networks alike."""
        trained = self.n_agents if trained is None else max(1, min(trained, self.n_agents))
        for net in (self.agent, self.target_agent):
            net.embedding = net.embedding.resized(n, trained, init)
        for mixer in (self.mixer, self.target_mixer):
            if hasattr(mixer, "resize_agents"):
                mixer.resize_agents(n, trained)
        self.n_agents = n

    def greedy_actions(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """argmax_a Q_i for every agent of the columns given, int64 [B, K]."""
        return self.q_values(obs).argmax(-1)

    def act(self, obs: dict[str, torch.Tensor], explore: bool,
            generator: torch.Generator | None = None, width: int | None = None,
            explore_width: int | None = None) -> torch.Tensor:
        """Actions [B, N] for a team observation: the network runs for the slots 0..W-1 (W the
        most active in the batch, or `width`: the env's count now, when a new stage began
        after the observation, or every slot when the inactive agents act with the policy);
        of those, the first `explore_width` (default all W) explore when `explore`, the rest
        act greedily. The others get 0, which the env replaces with a uniformly random
        action."""
        width = active_width(obs) if width is None else width
        views = obs[keys.VIEWS]
        actions = torch.zeros((views.shape[0], self.n_agents), dtype=torch.int64,
                              device=views.device)
        if width:
            trimmed = trim_agents(obs, width)
            actions[:, :width] = self.explore_actions(trimmed, generator, explore_width) \
                if explore else self.greedy_actions(trimmed)
        return actions

    def explore_actions(
        self, obs: dict[str, torch.Tensor], generator: torch.Generator | None = None,
        width: int | None = None,
    ) -> torch.Tensor:
        """Per-agent epsilon-greedy: each agent independently takes a uniform action w.p. eps
        (only the first `width` slots; the others stay greedy)."""
        greedy = self.greedy_actions(obs)
        width = greedy.shape[1] if width is None else min(width, greedy.shape[1])
        exploring = greedy[:, :width]
        random = torch.randint(0, self.n_actions, exploring.shape, generator=generator,
                               device=greedy.device)
        explore = torch.rand(exploring.shape, generator=generator, device=greedy.device)
        explored = torch.where(explore < self.epsilon, random, exploring)
        return explored if width == greedy.shape[1] else torch.cat(
            [explored, greedy[:, width:]], dim=1)

    # ---- RLlib's forward API --------------------------------------------------------------
    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTIONS: self.act(batch[Columns.OBS], explore=False)}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTIONS: self.act(batch[Columns.OBS], explore=True)}

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        # The learner computes Q-values inside its loss, which needs both time steps.
        return {}

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return [name for name in LEARNER_ONLY if getattr(self, name, None) is not None]
