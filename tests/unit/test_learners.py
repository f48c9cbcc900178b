"""The learner family on synthetic batches, no Ray: mixers, masks, gradients, targets, MFQ."""

import numpy as np
import pytest
import torch
from marlscale import keys
from marlscale.algorithms import ALGORITHMS
from marlscale.algorithms import replay as rp
from marlscale.algorithms.config import module_config
from marlscale.algorithms.learner import bootstrap_values, split_obs, td_loss
from marlscale.algorithms.replay import TeamReplay
from marlscale.algorithms.settings import MIXER_INITS, TeamQSettings
from marlscale.envs import MagentTeamEnv
from marlscale.models import QMixer, VDNMixer
from marlscale.models.team_module import TeamQModule

N, A = 5, 13
SIZES = {"mixing_embed_dim": 32, "hypernet_embed": 64, "init": "default"}


def make_module(algorithm: str, n_agents: int = N, game: str = "adversarial_pursuit"):
    env = MagentTeamEnv({"game": game, "n_agents": n_agents, "seed": 0})
    team = env.possible_agents[0]
    torch.manual_seed(0)
    module = TeamQModule(
        observation_space=env.observation_spaces[team], action_space=env.action_spaces[team],
        model_config=module_config(algorithm, TeamQSettings()),
    )
    return module, env, team


def synthetic_batch(env, team, batch_size=6, seed=0):
    """A replay batch from real env observations (random play), n-step 1."""
    rng = np.random.default_rng(seed)
    buffer = TeamReplay(env.observation_spaces[team], env.action_spaces[team].nvec[0], 500,
                        seed=seed)
    obs, _ = env.reset()
    chunk = {"obs": [obs[team]], "actions": [], "reward": [], "terminated": []}
    for _ in range(20):
        action = {t: rng.integers(0, env.action_spaces[t].nvec) for t in env.possible_agents}
        obs, reward, term, _, _ = env.step(action)
        chunk["obs"].append(obs[team])
        chunk["actions"].append(action[team])
        chunk["reward"].append(reward[team])
        chunk["terminated"].append(term[team])
    buffer.add_chunk({
        "obs": {k: np.stack([o[k] for o in chunk["obs"]]) for k in chunk["obs"][0]},
        "actions": np.stack(chunk["actions"]), "reward": np.asarray(chunk["reward"], np.float32),
        "terminated": np.asarray(chunk["terminated"]),
    })
    batch = buffer.sample(batch_size, gamma=0.9)
    return {k: torch.as_tensor(v) for k, v in batch.items()}


def test_registry_declares_the_five_algorithms():
    assert set(ALGORITHMS) == {"iql", "vdn", "qmix", "mfq", "mfqmix"}
    assert ALGORITHMS["mfqmix"].mixer == "qmix" and ALGORITHMS["mfqmix"].mean_action == "neighbour"
    assert ALGORITHMS["mfq"].target == "boltzmann" and ALGORITHMS["iql"].mixer is None


def test_vdn_is_the_masked_sum():
    qs = torch.randn(4, N)
    mask = torch.ones(4, N)
    mask[:, 2] = 0
    got = VDNMixer(N, 10)(qs, torch.randn(4, 10), mask)
    torch.testing.assert_close(got, (qs * mask).sum(-1))


@pytest.mark.parametrize("init", MIXER_INITS)
def test_qmix_is_monotone_in_every_agent_q(init):
    torch.manual_seed(1)
    mixer = QMixer(N, 20, **{**SIZES, "init": init})
    qs = torch.randn(64, N, requires_grad=True)
    q_tot = mixer(qs, torch.randn(64, 20), torch.ones(64, N))
    (grad,) = torch.autograd.grad(q_tot.sum(), qs)
    assert (grad >= 0).all() and (grad > 0).any()


@pytest.mark.parametrize("mixer_cls", [VDNMixer, QMixer])
def test_masked_agents_change_nothing_in_the_mixer(mixer_cls):
    torch.manual_seed(2)
    mixer = mixer_cls(N, 20, **SIZES)
    qs, state = torch.randn(8, N), torch.randn(8, 20)
    mask = torch.ones(8, N)
    mask[:, [1, 3]] = 0
    other = qs.clone()
    other[:, [1, 3]] = torch.randn(8, 2) * 100
    torch.testing.assert_close(mixer(qs, state, mask), mixer(other, state, mask))


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_masked_agents_change_nothing_in_the_loss(algorithm):
    module, env, team = make_module(algorithm)
    batch = synthetic_batch(env, team)
    batch[keys.ACTIVE][:, 0] = 0  # agent 0 is random-controlled now and next
    batch[rp.NEXT + keys.ACTIVE][:, 0] = 0
    loss, _ = td_loss(module, batch, temperature=0.1)
    changed = dict(batch)
    for key in (keys.VIEWS, rp.NEXT + keys.VIEWS):
        views = batch[key].clone()
        views[:, 0] = 255 - views[:, 0]
        changed[key] = views
    actions = batch[rp.ACTIONS].clone()
    actions[:, 0] = (actions[:, 0] + 1) % A
    changed[rp.ACTIONS] = actions
    loss_changed, _ = td_loss(module, changed, temperature=0.1)
    torch.testing.assert_close(loss, loss_changed)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_gradients_reach_agent_net_embeddings_and_mixer(algorithm):
    module, env, team = make_module(algorithm)
    loss, _ = td_loss(module, synthetic_batch(env, team), temperature=0.1)
    loss.backward()
    assert module.agent.view_encoder.weight.grad.abs().sum() > 0
    assert all(block.grad.abs().sum() > 0 for block in module.agent.embedding.blocks)
    if module.mean_action is not None:
        assert module.agent.mean_action_encoder[0].weight.grad.abs().sum() > 0
    if module.mixer is not None:
        assert all(p.grad is not None for p in module.mixer.parameters())
    if isinstance(module.mixer, QMixer):
        assert module.mixer.hyper_w1[0].weight.grad.abs().sum() > 0
    # the targets take no gradient
    assert all(p.grad is None for p in module.target_agent.parameters())


def test_target_networks_stay_frozen_until_a_sync():
    module, env, team = make_module("qmix")
    before = [p.clone() for p in module.target_agent.parameters()]
    optimizer = torch.optim.Adam([*module.agent.parameters(), *module.mixer.parameters()], 1e-2)
    for _ in range(3):
        loss, _ = td_loss(module, synthetic_batch(env, team), temperature=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for p, b in zip(module.target_agent.parameters(), before):
        torch.testing.assert_close(p, b)
    assert any(not torch.equal(p, t) for p, t in
               zip(module.agent.parameters(), module.target_agent.parameters()))
    module.sync_targets(0.5)  # soft: halfway
    for p, t, b in zip(module.agent.parameters(), module.target_agent.parameters(), before):
        torch.testing.assert_close(t, 0.5 * p + 0.5 * b)
    module.sync_targets(1.0)  # hard copy
    for p, t in zip(module.agent.parameters(), module.target_agent.parameters()):
        torch.testing.assert_close(t, p)


def test_mfq_boltzmann_target_matches_a_hand_computation():
    module, env, team = make_module("mfq")
    batch = synthetic_batch(env, team)
    _, next_obs = split_obs(batch)
    q = module.q_values(next_obs, target=True).detach().double().numpy()
    temperature = 0.5
    expected = np.zeros(q.shape[:2])
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            weights = np.exp((q[b, i] - q[b, i].max()) / temperature)
            policy = weights / weights.sum()
            expected[b, i] = (policy * q[b, i]).sum()
    got = bootstrap_values(module, next_obs, "boltzmann", temperature)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    # and the mean action of MFQ is the team's, the same for every agent
    mean = module.mean_action_input(next_obs)
    torch.testing.assert_close(mean[:, 0], next_obs[keys.TEAM_MEAN_ACTION])


def test_double_q_target_uses_the_online_argmax_and_the_target_value():
    module, env, team = make_module("qmix")
    module.agent.head[-1].bias.data += torch.arange(A, dtype=torch.float32)  # online != target
    _, next_obs = split_obs(synthetic_batch(env, team))
    best = module.q_values(next_obs).argmax(-1, keepdim=True)
    expected = module.q_values(next_obs, target=True).gather(-1, best).squeeze(-1)
    torch.testing.assert_close(bootstrap_values(module, next_obs, "double_q", 0.1), expected)


@pytest.mark.parametrize("init", MIXER_INITS)
def test_the_qmix_gain_is_the_mean_slope_of_q_tot(init):
    torch.manual_seed(3)
    mixer = QMixer(N, 20, **{**SIZES, "init": init})
    qs, state = torch.randn(16, N, requires_grad=True), torch.randn(16, 20)
    mask = torch.ones(16, N)
    mask[:, 0] = 0
    (grad,) = torch.autograd.grad(mixer(qs, state, mask).sum(), qs)
    expected = grad[:, 1:].mean()  # the masked agent's slope is 0 and not counted
    torch.testing.assert_close(mixer.gain(qs.detach(), state, mask), expected)


def test_the_loss_over_the_active_prefix_equals_the_loss_over_every_slot():
    """Inactive agents add neither compute nor gradient: the loss on a batch cut to the active
    prefix is the loss on the whole team with those agents masked."""
    for algorithm in ("qmix", "vdn", "iql", "mfq", "mfqmix"):
        module, env, team = make_module(algorithm, n_agents=8)
        env.set_active(3, team)
        full = synthetic_batch(env, team, batch_size=16)
        assert full[keys.VIEWS].shape[1] == 3  # the replay stores the active prefix only
        padded = {}
        for key, value in full.items():
            base = key[len(rp.NEXT):] if key.startswith(rp.NEXT) else key
            if base in (*keys.PER_AGENT_KEYS, keys.ALIVE, keys.ACTIVE, rp.ACTIONS):
                shape = (value.shape[0], 8, *value.shape[2:])
                grown = torch.zeros(shape, dtype=value.dtype)
                grown[:, :3] = value
                if base == keys.ALIVE:
                    grown[:, 3:] = 1
                value = grown
            padded[key] = value
        cut, _ = td_loss(module, full, temperature=0.1)
        whole, _ = td_loss(module, padded, temperature=0.1)
        assert float(cut.detach()) == pytest.approx(float(whole.detach()), rel=1e-5), algorithm


def test_slot_blocks_past_the_active_prefix_get_no_gradient():
    module, env, team = make_module("qmix", n_agents=40)  # blocks of 2 slots
    env.set_active(5, team)
    loss, _ = td_loss(module, synthetic_batch(env, team), temperature=0.1)
    loss.backward()
    for table in (module.agent.embedding, module.mixer.w1_weight, module.mixer.w1_bias):
        grads = [block.grad for block in table.blocks]
        assert all(g is not None and g.abs().sum() > 0 for g in grads[:3])  # slots 0..5
        assert all(g is None for g in grads[3:])


def test_the_sampler_runs_the_network_for_the_active_agents_only():
    module, env, team = make_module("mfqmix", n_agents=10)
    env.set_active(4, team)
    obs, _ = env.reset()
    batch = {k: torch.from_numpy(v[None]) for k, v in obs[team].items()}
    seen = []
    module.agent.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape[1]))
    actions = module.act(batch, explore=False)
    assert seen == [4] and actions.shape == (1, 10) and (actions[0, 4:] == 0).all()
    env.set_active(0, team)
    obs, _ = env.reset()
    batch = {k: torch.from_numpy(v[None]) for k, v in obs[team].items()}
    assert (module.act(batch, explore=True) == 0).all() and seen == [4]


def test_resized_policies_keep_the_shared_network_and_grow_or_cut_the_slots():
    module, _, _ = make_module("qmix", n_agents=6)
    embedding = module.agent.embedding.weight.detach().clone()
    w1 = module.mixer.w1_weight.weight.detach().clone()
    shared = module.agent.head[0].weight.detach().clone()
    module.resize_agents(9, trained=4)
    assert module.n_agents == 9 and module.agent.embedding.weight.shape[0] == 9
    grown = module.agent.embedding.weight.detach()
    torch.testing.assert_close(grown[:6], embedding)
    torch.testing.assert_close(grown[6:], embedding[:4].mean(0).expand(3, -1))
    assert module.target_agent.embedding.weight.shape[0] == 9
    new_w1 = module.mixer.w1_weight.weight.detach()
    torch.testing.assert_close(new_w1[:6], w1)
    torch.testing.assert_close(new_w1[8], w1[:4].mean(0))
    torch.testing.assert_close(module.agent.head[0].weight, shared)
    module.resize_agents(2, trained=2)
    torch.testing.assert_close(module.agent.embedding.weight.detach(), embedding[:2])
    assert module.mixer.w1_weight.weight.shape[:2] == (2, 32)


@pytest.mark.parametrize("algorithm", ["qmix", "mfqmix"])
def test_the_paired_online_and_target_pass_equals_the_two_separate_passes(algorithm):
    module, env, team = make_module(algorithm)
    with torch.no_grad():  # a target that differs from the online net
        for param in module.target_agent.parameters():
            param.add_(0.01 * torch.randn_like(param))
    _, next_obs = split_obs(synthetic_batch(env, team))
    with torch.no_grad():
        online, target = module.online_and_target_q_values(next_obs)
        torch.testing.assert_close(online, module.q_values(next_obs))
        torch.testing.assert_close(target, module.q_values(next_obs, target=True))
    assert not torch.equal(online, target)


def test_clip_global_norm_gives_rllibs_norm_and_clipped_gradients():
    from marlscale.algorithms.learner import clip_global_norm
    from ray.rllib.utils.torch_utils import clip_gradients

    generator = torch.Generator().manual_seed(0)
    shapes = [(128, 500), (128,), (13, 128), (5, 16), (3200, 64)]
    for scale, clip in ((10.0, 1.0), (1e-3, 10.0), (10.0, None)):
        grads = [scale * torch.randn(shape, generator=generator) for shape in shapes]
        theirs = {i: g.clone() for i, g in enumerate(grads)}
        norm = clip_global_norm(grads, clip)
        if clip is None:
            expected = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
            torch.testing.assert_close(norm, expected)
            continue
        expected = clip_gradients(theirs, grad_clip=clip, grad_clip_by="global_norm")
        assert torch.equal(norm, expected)
        for i, grad in enumerate(grads):
            assert torch.equal(grad, theirs[i])
        clipped = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
        assert clipped <= clip * (1 + 1e-5)
    grads = [torch.ones(3), torch.tensor([float("inf")])]
    assert not torch.isfinite(clip_global_norm(grads, 1.0))
    assert torch.equal(grads[0], torch.ones(3))  # a non-finite norm leaves them as they are

