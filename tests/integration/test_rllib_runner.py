"""The team envs inside RLlib's new-stack sampling machinery (MultiAgentEnvRunner)."""

import numpy as np
import pytest
import torch
from marlscale import keys
from marlscale.envs import ENV_NAMES
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

pytestmark = pytest.mark.integration


class UniformTeamModule(TorchRLModule):
    """Uniformly random MultiDiscrete team actions, as a torch module (RLlib's connectors
    convert batches to torch tensors)."""

    def _forward(self, batch, **kwargs):
        alive = batch[Columns.OBS][keys.ALIVE]  # [B, N]
        assert alive.dtype == torch.uint8 and batch[Columns.OBS][keys.VIEWS].dim() == 5
        nvec = torch.as_tensor(self.action_space.nvec)
        return {Columns.ACTIONS: (torch.rand(alive.shape) * nvec).long()}


@pytest.mark.parametrize(
    "game, teams", [("adversarial_pursuit", ["predator", "prey"]), ("battle", ["red", "blue"])]
)
def test_env_runner_samples_team_episodes(game, teams):
    config = (
        PPOConfig()
        .environment(ENV_NAMES[game], env_config={"n_agents": 5, "opponent": "learned",
                                                  "max_cycles": 30, "seed": 0})
        .multi_agent(policies=set(teams), policy_mapping_fn=lambda agent_id, *a, **k: agent_id)
        .rl_module(rl_module_spec=MultiRLModuleSpec(
            rl_module_specs={team: RLModuleSpec(module_class=UniformTeamModule) for team in teams}))
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2)
    )
    runner = MultiAgentEnvRunner(config=config)
    episodes = runner.sample(num_episodes=2, random_actions=False)
    assert len(episodes) >= 2
    for episode in episodes:
        assert episode.is_done and len(episode) <= 30
        for team in teams:
            agent_episode = episode.agent_episodes[team]
            # RLlib stacks a Dict space's observations per key over time.
            views = agent_episode.get_observations()[keys.VIEWS]
            n = 5 if team == teams[0] else 5 * (2 if game == "adversarial_pursuit" else 1)
            assert views.dtype == np.uint8 and views.shape[:2] == (len(agent_episode) + 1, n)
            assert len(agent_episode) == len(episode)  # one stream per team, time-aligned
    runner.stop()
