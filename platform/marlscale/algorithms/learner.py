"""`TeamQLearner`: the one learner of the family. Each algorithm's declaration picks the mixer,
the mean-action input and the bootstrap target; the loss below is shared by all of them.

Per module (team), on a batch of n-step transitions:
  Q_i      = Q(o_i, a_i[, mean_i])                         every agent, one batched pass
  mask_i   = alive_i * active_i                             dead / random agents drop out
  v'_i     = Q'(o'_i, argmax_a Q(o'_i, a))                 target "double_q"
           = sum_a softmax(Q'(o'_i, .)/T)(a) Q'(o'_i, a)    target "boltzmann" (MFQ)
  mixer:     L = (Q_tot(Q * mask, s) - [R + g^h Q'_tot(v' * mask', s')])^2
  no mixer:  L = sum_i mask_i (Q_i - [R_i + g^h alive'_i v'_i])^2 / sum_i mask_i
R is the n-step team reward (R_i the agent's own when the env gives individual rewards and
there is no mixer). Targets sync after every gradient step that the settings ask for.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from marlscale import keys
from marlscale.algorithms import replay

TD_LOSS = "td_loss"
Q_MEAN = "q_mean"
TARGET_MEAN = "target_mean"
GRADIENT_NORM = "gradient_norm"
MIXER_GAIN = "mixer_gain"
"""QMIX's mean dQ_tot/dQ_i on the batch (VDN: 1): the share of the value's scale the mixer
carries; see docs/algorithms/qmix.md#ablation."""
LR_SCALE = "lr_scale"
"""An optimizer param group's lr as a multiple of the configured lr (the mixer's group)."""
ITERATION = "training_iteration"
"""The Algorithm's iteration, passed to the learner in `timesteps` (for divergence errors)."""


class DivergenceError(RuntimeError):
    """A non-finite loss, Q-value or gradient: training diverged. Deterministic: a retry from
    the last checkpoint with the same settings diverges again."""


def split_obs(batch: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """The observation columns of a replay batch, at t and at t + h."""
    now = {k: batch[k] for k in batch if k in keys.OBS_KEYS}
    nxt = {k[len(replay.NEXT):]: batch[k] for k in batch if k.startswith(replay.NEXT)}
    return now, nxt


def bootstrap_values(module, next_obs: dict[str, torch.Tensor], target: str,
                     temperature: float) -> torch.Tensor:
    """v'_i [B, N] for every agent at the bootstrap observation (no gradient)."""
    with torch.no_grad():
        q_target = module.q_values(next_obs, target=True)
        if target == "boltzmann":
            policy = torch.softmax(q_target / temperature, dim=-1)
            return (policy * q_target).sum(-1)
        best = module.q_values(next_obs).argmax(-1, keepdim=True)
        return q_target.gather(-1, best).squeeze(-1)


def td_loss(
    module, batch: dict[str, torch.Tensor], *, temperature: float, team_reward: str = "sum"
) -> tuple[torch.Tensor, dict]:
    """The shared loss of one team's module; returns (loss, stats).

    team_reward "mean": the team reward is divided by the team's size N before it enters the
    target, so Q-values live on a per-agent scale whatever N (agents' own rewards, in
    individual mode without a mixer, are per-agent already and stay as they are)."""
    obs, next_obs = split_obs(batch)
    reward = batch[replay.REWARD]
    if team_reward == "mean":
        reward = reward * (1.0 / module.n_agents)
    mask = (obs[keys.ALIVE] * obs[keys.ACTIVE]).float()
    next_alive = next_obs[keys.ALIVE].float()
    next_mask = next_alive * next_obs[keys.ACTIVE].float()
    q_taken = module.q_values(obs).gather(-1, batch[replay.ACTIONS].unsqueeze(-1)).squeeze(-1)
    next_v = bootstrap_values(module, next_obs, module.target, temperature)
    discount = batch[replay.DISCOUNT]
    if module.mixer is not None:
        state = module.state_input(obs)
        gain = None
        if hasattr(module.mixer, "gain"):  # QMIX: its slope, from the same forward pass
            q_tot, gain = module.mixer(q_taken, state, mask, with_gain=True)
        else:
            q_tot = module.mixer(q_taken, state, mask)
        with torch.no_grad():
            next_tot = module.target_mixer(next_v, module.state_input(next_obs), next_mask)
            target = reward + discount * next_tot
        loss = F.mse_loss(q_tot, target)
        stats = {Q_MEAN: q_tot.mean(), TARGET_MEAN: target.mean()}
        if gain is not None:
            stats[MIXER_GAIN] = gain
    else:
        own = batch.get(replay.AGENT_REWARD_SUM)
        reward = reward.unsqueeze(-1).expand_as(q_taken) if own is None else own
        target = reward + discount.unsqueeze(-1) * next_alive * next_v
        weight = mask.sum().clamp(min=1.0)
        loss = (mask * (q_taken - target) ** 2).sum() / weight
        stats = {
            Q_MEAN: (mask * q_taken).sum() / weight,
            TARGET_MEAN: (mask * target).sum() / weight,
        }
    stats[TD_LOSS] = loss
    return loss, stats


class TeamQLearner(TorchLearner):
    """TorchLearner of the IQL/VDN/QMIX/MFQ/MFQMIX family (see the module docstring)."""

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self._module[module_id]
        # Only the online networks: the target copies are updated by syncing, not by Adam.
        groups = [{"params": list(module.agent.parameters())}]
        if module.mixer is not None:
            scale = 1.0 if config.mixer_lr is None else config.mixer_lr / config.lr
            groups.append({"params": list(module.mixer.parameters()), LR_SCALE: scale})
        self.register_optimizer(
            module_id=module_id,
            optimizer=torch.optim.Adam(groups, foreach=True),
            params=[p for group in groups for p in group["params"]],
            lr_or_lr_schedule=config.lr,
        )

    @staticmethod
    @override(TorchLearner)
    def _set_optimizer_lr(optimizer, lr: float) -> None:
        # RLlib sets one lr for every group; the mixer's group keeps its ratio (mixer_lr / lr).
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get(LR_SCALE, 1.0)

    @override(TorchLearner)
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._iteration = timesteps.get(ITERATION)

    def _diverged(self, module_id, term: str, value) -> DivergenceError:
        algorithm = self.module[module_id].unwrapped().algorithm
        config = self.config.get_config_for_module(module_id)
        return DivergenceError(
            f"{term}={float(value)} at iteration {getattr(self, '_iteration', None)} (team "
            f"{module_id}, {algorithm}): training diverged. This is deterministic: a retry from "
            f"the last checkpoint diverges again; change the settings (e.g. a smaller lr, now "
            f"{config.lr}, or grad_clip, now {config.grad_clip})")

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> Any:
        module = self.module[module_id].unwrapped()
        loss, stats = td_loss(module, batch, temperature=config.temperature,
                              team_reward=config.team_reward)
        for name, value in stats.items():
            if not torch.isfinite(value):
                raise self._diverged(module_id, name, value)
            self.metrics.log_value((module_id, name), value.detach(), window=1)
        return loss

    @override(TorchLearner)
    def compute_gradients(self, loss_per_module, **kwargs):
        # Checked before RLlib's own handling, which zeroes non-finite gradients with a warning.
        # Slot blocks past the active prefix took no part in the loss: their gradient is None,
        # and leaving them out lets the optimizer skip them (models/slots.py).
        gradients = {ref: grad for ref, grad in
                     super().compute_gradients(loss_per_module, **kwargs).items()
                     if grad is not None}
        for module_id in self.module.keys():
            grads = [gradients[ref] for ref in map(self.get_param_ref,
                                                   self.module[module_id].parameters())
                     if gradients.get(ref) is not None]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
                if not torch.isfinite(norm):
                    raise self._diverged(module_id, GRADIENT_NORM, norm)
        return gradients

    @override(TorchLearner)
    def apply_gradients(self, gradients_dict) -> None:
        super().apply_gradients(gradients_dict)
        # Target networks follow every gradient step: soft (Polyak) or a periodic hard copy.
        for module_id in self.module.keys():
            module = self.module[module_id].unwrapped()
            config = self.config.get_config_for_module(module_id)
            module.num_updates += 1
            if config.target_update == "soft":
                module.sync_targets(config.tau)
            elif int(module.num_updates) % config.target_update_period == 0:
                module.sync_targets(1.0)
