"""Names shared across the platform: observation keys, info keys, metric names.

One place, so that the env, the learners and the reports never spell a key twice.
"""

# ---- a team's observation (gymnasium Dict space) ----
VIEWS = "views"
"""uint8 [N, H, W, C]: every agent's local view, round(255 * magent2 value); zeros when dead."""
ALIVE = "alive"
"""uint8 [N]: 1 while the agent is alive (battle agents die; pursuit agents never do)."""
ACTIVE = "active"
"""uint8 [N]: 1 where the learned policy controls the agent; others act uniformly at random."""
NEIGHBOUR_MEAN_ACTION = "neighbour_mean_action"
"""float32 [N, A]: previous-step mean one-hot action of the agent's nearest alive team-mates."""
TEAM_MEAN_ACTION = "team_mean_action"
"""float32 [A]: previous-step mean one-hot action over the alive team (Yang et al. 2018)."""
STATE = "state"
"""uint8 [G, G, 5]: pooled global state, channels walls, own presence, own hp, other presence,
other hp; G = state_grid, independent of the map size."""
AGENT_REWARD = "agent_reward"
"""float32 [N]: each agent's own reward for the step that led here (reward_mode=individual)."""

# ---- infos ----
TEAM_REWARD = "team_reward"
TEAM_REWARD_PER_AGENT = "team_reward_per_agent"
EPISODE = "episode"
"""Present in a team's info on the last step: the episode metrics below."""

# ---- counters of a run (result rows, checkpoints) ----
ENV_STEPS = "env_steps_sampled_lifetime"
"""Env steps sampled since training began: the x-axis of every curve and the `env_steps` stop."""
AGENT_STEPS = "agent_steps_sampled_lifetime"
UPDATES = "num_updates_lifetime"
"""Gradient steps since training began."""

# ---- episode metrics ----
RETURN = "return"
RETURN_PER_AGENT = "return_per_agent"
ACTIVE_RETURN_PER_AGENT = "active_return_per_agent"
"""The return of the agents the policy controls, per such agent (under incremental learning the
others act at random; with no agent active, the same as RETURN_PER_AGENT)."""
LENGTH = "length"
ALIVE_AT_END = "alive"
N_ACTIVE = "n_active"
OPPONENT_RETURN = "opponent_return"
OPPONENT_RETURN_PER_AGENT = "opponent_return_per_agent"
REWARD_DIFFERENCE = "reward_difference"
"""This team's return per agent minus the other team's (the paper's Fig 7 metric)."""

OBS_KEYS = (VIEWS, ALIVE, ACTIVE, NEIGHBOUR_MEAN_ACTION, TEAM_MEAN_ACTION, STATE, AGENT_REWARD)
"""Every observation column a team can have."""
PER_AGENT_KEYS = (VIEWS, NEIGHBOUR_MEAN_ACTION, AGENT_REWARD)
"""The columns with one entry per agent that only the active agents need: the sampler, the
replay and the learner keep them for the policy's slots (a prefix, 0..n_active-1) only."""
