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

import contextlib
import time
from typing import Any

import torch
import torch.nn.functional as F
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from marlscale import keys
from marlscale.algorithms import replay
from marlscale.algorithms.q_bound import QBound, q_bound

TD_LOSS = "td_loss"
Q_MEAN = "q_mean"
TARGET_MEAN = "target_mean"
GRADIENT_NORM = "gradient_norm"
MIXER_GAIN = "mixer_gain"
"""QMIX's mean dQ_tot/dQ_i on the batch (VDN: 1): the share of the value's scale the mixer
carries; see docs/algorithms/qmix.md#ablation."""
Q_ABS_MAX = "q_abs_max"
"""The largest |Q_i| of the agents' own Q-values (actions taken, unmasked agents) on the batch:
what the divergence check bounds (`q_bound.py`). Mixed values can hide it: QMIX's ELU saturates,
so a diverged team can show a healthy q_mean and TD loss."""
DEAD_MIXER_GAIN = 1e-6
DEAD_MIXER_UPDATES = 50
"""A mixer slope (`MIXER_GAIN`) below DEAD_MIXER_GAIN on DEAD_MIXER_UPDATES updates in a row,
each with an agent in the batch, fails the run: Q_tot no longer depends on the agents' Q-values
and they get no gradient. A healthy QMIX's slope stays within 0.1-10 (0.14 at initialisation,
docs/algorithms/qmix.md#ablation); a saturated one is 0 or within float32's rounding of it."""
LR_SCALE = "lr_scale"
"""An optimizer param group's lr as a multiple of the configured lr (the mixer's group)."""
ITERATION = "training_iteration"
"""The Algorithm's iteration, passed to the learner in `timesteps` (for divergence errors)."""


PHASES = {
    "replay_sample": "TeamReplay.sample: gathering the uint8 rows and n-step returns",
    "learner_update": "RLlib's LearnerGroup.update, all of it (the phases below and RLlib's "
                      "own work: batch conversion, minibatch slicing, metrics)",
    "q_online_t": "the online Q pass at t, with gradient (uint8 -> float inside)",
    "bootstrap_t+h": "the no-grad online and target Q passes at t + h and the double-Q "
                     "selection (MFQ: the target pass and its Boltzmann value)",
    "mixer_and_loss": "masks, the mixer (QMIX: hypernetworks) at t and the target mixer at "
                      "t + h, the TD target and the loss",
    "backward": "autograd's backward pass",
    "grad_norm_and_clip": "the global gradient norm, its finiteness check, the clipping",
    "optimizer_step": "Adam",
    "target_sync": "the target networks' hard copy or soft update",
    "weight_sync": "the weights (and epsilon) sent to the EnvRunners, once per iteration",
}
"""The phases of one update (and of an iteration around it), each a `phase` scope of the same
name: `marlscale bench train --profile` tables the time spent in each."""
_phase_seconds: dict[str, float] | None = None


@contextlib.contextmanager
def phase(name: str):
    """A named scope of `PHASES`: a `torch.profiler.record_function` (it shows in torch's
    profiler traces) whose wall time is added up while `timing_phases` is on. CPU kernels are
    synchronous, so the wall time is the phase's own; on CUDA each boundary synchronizes."""
    with torch.profiler.record_function(name):
        if _phase_seconds is None:
            yield
            return
        _synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            _synchronize()
            _phase_seconds[name] = _phase_seconds.get(name, 0.0) + time.perf_counter() - start


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextlib.contextmanager
def timing_phases():
    """Within it, `phase` scopes add up their wall time into the dict it yields (seconds per
    phase name; a phase inside another counts in both)."""
    global _phase_seconds
    _phase_seconds = totals = {}
    try:
        yield totals
    finally:
        _phase_seconds = None


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
        if target == "boltzmann":
            q_target = module.q_values(next_obs, target=True)
            policy = torch.softmax(q_target / temperature, dim=-1)
            return (policy * q_target).sum(-1)
        q_online, q_target = module.online_and_target_q_values(next_obs)
        return q_target.gather(-1, q_online.argmax(-1, keepdim=True)).squeeze(-1)


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
    with phase("q_online_t"):
        q_taken = module.q_values(obs).gather(-1, batch[replay.ACTIONS].unsqueeze(-1))
    with phase("bootstrap_t+h"):
        next_v = bootstrap_values(module, next_obs, module.target, temperature)
    with phase("mixer_and_loss"):
        return _loss(module, batch, obs, next_obs, q_taken.squeeze(-1), next_v, reward)


def _loss(module, batch, obs, next_obs, q_taken, next_v, reward) -> tuple[torch.Tensor, dict]:
    """`td_loss` from the agents' Q-values of the actions taken and the bootstrap values."""
    mask = (obs[keys.ALIVE] * obs[keys.ACTIVE]).float()
    next_alive = next_obs[keys.ALIVE].float()
    next_mask = next_alive * next_obs[keys.ACTIVE].float()
    discount = batch[replay.DISCOUNT]
    masked_q = q_taken.detach() * mask
    q_abs_max = masked_q.abs().amax()
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
            Q_MEAN: masked_q.sum() / weight,
            TARGET_MEAN: (mask * target).sum() / weight,
        }
    stats[TD_LOSS] = loss
    stats[Q_ABS_MAX] = q_abs_max
    return loss, stats


def clip_global_norm(grads: list[torch.Tensor], grad_clip: float | None) -> torch.Tensor:
    """The global L2 norm of `grads`; with `grad_clip`, scales them in place so that it is at
    most grad_clip, as RLlib's `clip_gradients(grad_clip_by="global_norm")` does (the same
    norm and coefficient, so the same values), in two foreach calls rather than a Python loop
    over the parameters. A non-finite norm leaves the gradients as they are."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if grad_clip is not None and torch.isfinite(norm):
        coefficient = grad_clip / torch.clamp(norm + 1e-6, min=grad_clip)
        torch._foreach_mul_(grads, torch.clamp(coefficient, max=1.0))
    return norm


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
    def build(self) -> None:
        super().build()
        self._q_bounds: dict[str, QBound] = {}
        self._dead_mixer_runs: dict[str, torch.Tensor] = {}
        """Per module: the updates in a row, up to the last, whose mixer looked dead."""

    @override(TorchLearner)
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._iteration = timesteps.get(ITERATION)

    def _diverged(self, module_id, term: str, value, why: str = "") -> DivergenceError:
        algorithm = self.module[module_id].unwrapped().algorithm
        config = self.config.get_config_for_module(module_id)
        return DivergenceError(
            f"{term}={float(value):.3g} at iteration {getattr(self, '_iteration', None)} (team "
            f"{module_id}, {algorithm}): training diverged.{why} This is deterministic: a retry "
            f"from the last checkpoint diverges again; change the settings (e.g. a smaller lr, "
            f"now {config.lr}, or grad_clip, now {config.grad_clip})")

    def q_bound(self, module_id) -> QBound:
        """The bound on the team's |Q_i| that its rewards allow (`q_bound.py`), computed once."""
        bounds = self._q_bounds
        if module_id not in bounds:
            config = self.config.get_config_for_module(module_id)
            env_config = config.team_env_config
            bounds[module_id] = q_bound(
                env_config, env_config.game_spec.team_names.index(module_id), gamma=config.gamma,
                team_reward=config.team_reward,
                mixer=self.module[module_id].unwrapped().mixer is not None)
        return bounds[module_id]

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> Any:
        module = self.module[module_id].unwrapped()
        loss, stats = td_loss(module, batch, temperature=config.temperature,
                              team_reward=config.team_reward)
        values = {name: value.detach() for name, value in stats.items()}
        self._check(module_id, values)
        for name, value in values.items():
            self.metrics.log_value((module_id, name), value, window=1)
        return loss

    def _check(self, module_id, stats: dict[str, torch.Tensor]) -> None:
        """Raises `DivergenceError` on a non-finite stat, agents' Q-values beyond the rewards'
        bound (`q_bound`) or a dead mixer (`DEAD_MIXER_UPDATES`). One host sync per update: the
        checks are reduced on the device to one flag, and only a failure looks further."""
        bound = self.q_bound(module_id)
        healthy = torch.isfinite(torch.stack(list(stats.values()))).all() \
            & (stats[Q_ABS_MAX] <= bound.value)
        dead_runs = self._dead_mixer_runs
        if MIXER_GAIN in stats:  # an agent in the batch <=> some |Q_i| of the batch is > 0
            dead = (stats[MIXER_GAIN] < DEAD_MIXER_GAIN) & (stats[Q_ABS_MAX] > 0)
            run = dead_runs.get(module_id, 0) + dead.long()  # a device tensor, no sync
            dead_runs[module_id] = run = run * dead
            healthy = healthy & (run < DEAD_MIXER_UPDATES)
        if bool(healthy):
            return
        for name, value in stats.items():
            if not torch.isfinite(value):
                raise self._diverged(module_id, name, value)
        if stats[Q_ABS_MAX] > bound.value:
            raise self._diverged(
                module_id, Q_ABS_MAX, stats[Q_ABS_MAX],
                f" The agents' Q-values are beyond the bound {bound} that the rewards "
                f"allow.")
        raise self._diverged(
            module_id, MIXER_GAIN, stats[MIXER_GAIN],
            f" The mixer's slope dQ_tot/dQ_i stayed below the bound {DEAD_MIXER_GAIN:g} for "
            f"{DEAD_MIXER_UPDATES} updates in a row: its ELU saturated, so Q_tot no longer "
            f"depends on the agents' Q-values.")

    @override(TorchLearner)
    def compute_gradients(self, loss_per_module, **kwargs):
        # Slot blocks past the active prefix took no part in the loss: their gradient is None,
        # and leaving them out lets the optimizer skip them (models/slots.py).
        with phase("backward"):
            gradients = super().compute_gradients(loss_per_module, **kwargs)
        return {ref: grad for ref, grad in gradients.items() if grad is not None}

    @override(TorchLearner)
    def postprocess_gradients(self, gradients_dict):
        """Per module: the global gradient norm, computed once (`clip_global_norm`), raises on
        a non-finite value (before RLlib's handling, which zeroes non-finite gradients with a
        warning), is logged as RLlib logs it, and clips."""
        with phase("grad_norm_and_clip"):
            for module_id in self.module.keys():
                self._clip(module_id, gradients_dict)
        return gradients_dict

    def _clip(self, module_id, gradients_dict) -> None:
        config = self.config.get_config_for_module(module_id)
        for name, optimizer in self.get_optimizers_for_module(module_id):
            grads = list(self.filter_param_dict_for_optimizer(gradients_dict,
                                                              optimizer).values())
            if not grads:
                continue
            norm = clip_global_norm(grads, config.grad_clip)
            if not torch.isfinite(norm):
                raise self._diverged(module_id, GRADIENT_NORM, norm)
            if config.grad_clip is not None:
                self.metrics.log_value((module_id, f"gradients_{name}_global_norm"), norm,
                                       window=1)

    @override(TorchLearner)
    def apply_gradients(self, gradients_dict) -> None:
        with phase("optimizer_step"):
            if self._lr_scheduler_classes is not None or self._grad_scalers is not None:
                super().apply_gradients(gradients_dict)
            else:
                # Every gradient is finite (`postprocess_gradients` raised otherwise), so
                # RLlib's two isfinite checks per parameter and update are left out.
                for ref, grad in gradients_dict.items():
                    self._params[ref].grad = grad
                for module_id, names in self._module_optimizers.items():
                    for name in names:
                        self.get_optimizer(module_id, name).step()
        # Target networks follow every gradient step: soft (Polyak) or a periodic hard copy.
        with phase("target_sync"):
            for module_id in self.module.keys():
                module = self.module[module_id].unwrapped()
                config = self.config.get_config_for_module(module_id)
                module.num_updates += 1
                if config.target_update == "soft":
                    module.sync_targets(config.tau)
                elif int(module.num_updates) % config.target_update_period == 0:
                    module.sync_targets(1.0)
