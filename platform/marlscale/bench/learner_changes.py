"""`marlscale bench train --changes`: the effect of each of issue #24's learner changes.

One Algorithm (pursuit, `bench.train.TRAINING`), everything on. Each change is then turned
off on the live objects, alone (leave one out), and the learner's updates/s with it off and
on are timed in interleaved rounds (the fastest round of each counts), so a noisy machine
slows both alike. `speedup` is on / off: what keeping the change buys. Turning a change off
restores the code path it replaced, bound to the live learner and module:

* `heap_reuse`: glibc's mmap and trim thresholds back to their initial 128 KiB;
* `paired_t+1_pass`: the online and target Q at t + 1 as two separate passes;
* `foreach_grad_norm`: RLlib's gradient path (per-parameter norms, clipping and two isfinite
  checks per parameter, then the optimizer);

Two more candidates were measured this way and dropped (docs/benchmarks.md): turning off
torch's NaN fill of new tensors, and skipping RLlib's `module.train()` walk in `forward_train`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

CHANGES = ("heap_reuse", "paired_t+1_pass", "foreach_grad_norm")
ROUNDS = 4
UPDATES_PER_ROUND = 16


@contextlib.contextmanager
def turned_off(change: str, algo):
    """Within it, `change` is undone on `algo`'s learner and modules (see the module doc)."""
    import torch
    from ray.rllib.core.learner.torch.torch_learner import TorchLearner

    from marlscale.models import runtime

    learner = algo.learner_group._learner
    modules = [learner.module[team].unwrapped() for team in algo.replays]
    undo = contextlib.ExitStack()

    def patch(obj, name, value):
        undo.callback(vars(obj).pop, name, None)  # the instance attribute hides the method
        setattr(obj, name, value)

    if change == "heap_reuse":
        runtime.set_malloc_thresholds(128 * 1024, 128 * 1024)
        undo.callback(runtime.set_malloc_thresholds, runtime.MMAP_THRESHOLD,
                      runtime.TRIM_THRESHOLD)
    elif change == "paired_t+1_pass":
        for module in modules:
            patch(module, "online_and_target_q_values",
                  lambda obs, m=module: (m.q_values(obs), m.q_values(obs, target=True)))
    elif change == "foreach_grad_norm":
        own_apply = type(learner).apply_gradients

        def rllib_path(gradients):
            for module_id in learner.module.keys():  # the replaced finiteness check
                grads = [gradients[ref] for ref in map(learner.get_param_ref,
                                                       learner.module[module_id].parameters())
                         if gradients.get(ref) is not None]
                torch.isfinite(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            return TorchLearner.postprocess_gradients(learner, gradients)

        def rllib_apply(gradients):
            TorchLearner.apply_gradients(learner, gradients)
            with _no_optimizer_step(learner):  # then the target sync of our own
                own_apply(learner, {})

        patch(learner, "postprocess_gradients", rllib_path)
        patch(learner, "apply_gradients", rllib_apply)
    else:
        raise ValueError(f"change={change!r} is invalid; allowed: {', '.join(CHANGES)}")
    with undo:
        yield


@contextlib.contextmanager
def _no_optimizer_step(learner):
    """The learner's optimizers do nothing within it (their step already ran)."""
    optimizers = [learner.get_optimizer(m, n) for m, names in
                  learner._module_optimizers.items() for n in names]
    steps = [opt.step for opt in optimizers]
    for opt in optimizers:
        opt.step = lambda *a, **k: None
    try:
        yield
    finally:
        for opt, step in zip(optimizers, steps):
            opt.step = step


def report(n_agents: int | None = None) -> dict[str, Any]:
    """`marlscale bench train --changes`: `run` at N=25 and N=100 (or `n_agents`), as JSON."""
    from marlscale.bench.env import machine

    return {"benchmark": "train", "machine": machine(),
            "changes": [run(n) for n in ((n_agents,) if n_agents else (25, 100))]}


def run(n_agents: int) -> dict[str, Any]:
    """Each change's measured effect on the learner's updates/s at N (pursuit, QMIX)."""
    from marlscale.bench.train import warm_algorithm

    rows = {}
    with warm_algorithm(n_agents, 2 * UPDATES_PER_ROUND) as algo:
        for change in CHANGES:
            on, off = [], []
            for _ in range(ROUNDS):
                on.append(_seconds_per_update(algo))
                with turned_off(change, algo):
                    off.append(_seconds_per_update(algo))
            rows[change] = {"updates_per_s_on": round(1 / min(on), 2),
                            "updates_per_s_off": round(1 / min(off), 2),
                            "speedup": round(min(off) / min(on), 3)}
    return {"n_agents": n_agents, "rounds": ROUNDS, "updates_per_round": UPDATES_PER_ROUND,
            "changes": rows}


def _seconds_per_update(algo) -> float:
    start = time.perf_counter()
    algo.learn(UPDATES_PER_ROUND)
    return (time.perf_counter() - start) / UPDATES_PER_ROUND
