"""MAgent2 games as RLlib MultiAgentEnvs in which each team is one agent id.

A team's observation stacks all of its N agents (fixed slots, dead ones zero-padded), its
action is MultiDiscrete([A] * N), its reward is the team's. RLlib's per-step bookkeeping is
then O(teams), not O(agents), and a mixer receives time-aligned joint data for free. Each
agent's Q still reads only that agent's own slice, so execution stays decentralized.

We drive magent2's engine (`GridWorld`) directly with magent2's own game config (rules and
rewards), and skip the PettingZoo wrapper's per-agent dicts: that is where the raw wrapper
spends most of its step time.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import magent2
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from marlscale import keys
from marlscale.envs.config import TeamEnvConfig
from marlscale.envs.games import Game
from marlscale.envs.global_state import N_CHANNELS, StatePooler, quantize
from marlscale.mean_field import neighbour_mean_actions, team_mean_action


def runner_seed_offset(env_config) -> int:
    """Distinct seeds per RLlib EnvRunner and vector slot (attributes of RLlib's EnvContext)."""
    worker = getattr(env_config, "worker_index", None) or 0
    vector = getattr(env_config, "vector_index", None) or 0
    return 1024 * worker + vector


class _Team:
    """One side of the game: its engine handle, slots and per-episode tallies."""

    def __init__(self, index: int, name: str, handle, n: int, engine, game: Game, learning: bool):
        self.index = index
        self.name = name
        self.handle = handle
        self.n = n
        self.learning = learning
        self.n_actions = int(engine.get_action_space(handle)[0])
        self.view_shape = tuple(int(d) for d in engine.get_view_space(handle))
        self.body_area = game.body_size[index] ** 2
        self.static_hp = game.static_hp[index]
        self.active = np.ones(n, dtype=bool)
        self.all_active = True
        self.reset_tallies()

    def set_active(self, n_active: int) -> None:
        """The policy controls the first `n_active` slots; the others act at random."""
        self.active[:] = False
        self.active[:n_active] = True
        self.all_active = n_active == self.n

    def reset_tallies(self) -> None:
        # Slots of the agents the engine holds, in engine order (the order of its arrays).
        self.engine_slots = np.arange(self.n)
        self.alive = np.ones(self.n, dtype=bool)
        self.last_actions = np.zeros(self.n, dtype=np.int32)
        self.episode_return = 0.0
        self.active_return = 0.0  # of the slots active at each step
        self.events: dict[str, int] = {}

    @property
    def n_alive(self) -> int:
        return len(self.engine_slots)

    @property
    def all_alive(self) -> bool:
        """Everyone alive: the engine order is then the slot order (engine_slots keeps the
        survivors of arange(n) in order)."""
        return len(self.engine_slots) == self.n


class MagentTeamEnv(MultiAgentEnv):
    """A MAgent2 game (adversarial pursuit or battle) played team against team.

    Agent ids are the team names: ``predator``/``prey`` or ``red``/``blue``. With
    ``opponent="random"`` only the first team is an agent id and the other acts uniformly at
    random; with ``opponent="learned"`` both are. See `marlscale.keys` for the observation.
    """

    def __init__(
        self, config: TeamEnvConfig | dict[str, Any] | None = None, seed_offset: int | None = None
    ):
        """`config`: a TeamEnvConfig or its dict form (RLlib's env_config). `seed_offset` is
        added to `config.seed`; by default it is derived from RLlib's EnvContext, if any."""
        super().__init__()
        if seed_offset is None:
            seed_offset = runner_seed_offset(config)
        if isinstance(config, TeamEnvConfig):
            config.validate()
            self.env_config = config
        else:
            self.env_config = TeamEnvConfig.from_dict(dict(config or {}))
        cfg = self.env_config
        self.game = cfg.game_spec
        self.map_size = cfg.resolved_map_size
        self.max_cycles = cfg.resolved_max_cycles
        self._default_seed = None if cfg.seed is None else cfg.seed + seed_offset

        self._engine = magent2.GridWorld(
            self.game.magent_config(self.map_size, self._default_seed, cfg.rewards),
            map_size=self.map_size,
        )
        handles = self._engine.get_handles()
        learned = cfg.opponent == "learned"
        self._teams = [
            _Team(i, self.game.team_names[i], handles[i], count, self._engine, self.game,
                  learning=(i == 0 or learned))
            for i, count in enumerate(cfg.team_counts)
        ]
        self._learning = [team for team in self._teams if team.learning]
        self._pooler = StatePooler(self.map_size, cfg.state_grid)
        # The engine walls the map's border on every reset.
        edge = np.arange(self.map_size, dtype=np.int32)
        last = np.full_like(edge, self.map_size - 1)
        first = np.zeros_like(edge)
        self._border = np.concatenate([
            np.stack(pair, axis=1)
            for pair in ((edge, first), (edge, last), (first, edge), (last, edge))
        ])
        self._rng = np.random.default_rng(self._default_seed)
        self._walls = np.zeros((0, 2), dtype=np.int32)
        self._seeded = False
        self._t = 0
        self._active_scope = cfg.reward_scope == "active"
        self._policy_inactive = cfg.inactive == "policy"
        if cfg.n_active is not None:
            for team in self._learning:
                team.set_active(cfg.n_active)

        self.possible_agents = [team.name for team in self._learning]
        self.agents = list(self.possible_agents)
        self.observation_spaces = {t.name: self._observation_space(t) for t in self._learning}
        self.action_spaces = {
            t.name: gym.spaces.MultiDiscrete(np.full(t.n, t.n_actions, dtype=np.int64))
            for t in self._learning
        }
        # The base class reads these two single-space attributes in its checks.
        self.observation_space = gym.spaces.Dict(self.observation_spaces)
        self.action_space = gym.spaces.Dict(self.action_spaces)

    # ---- spaces --------------------------------------------------------------------------
    def _observation_space(self, team: _Team) -> gym.spaces.Dict:
        n, a, grid = team.n, team.n_actions, self.env_config.state_grid
        spaces = {
            keys.VIEWS: gym.spaces.Box(0, 255, (n, *team.view_shape), np.uint8),
            keys.ALIVE: gym.spaces.Box(0, 1, (n,), np.uint8),
            keys.ACTIVE: gym.spaces.Box(0, 1, (n,), np.uint8),
            keys.STATE: gym.spaces.Box(0, 255, (grid, grid, N_CHANNELS), np.uint8),
        }
        if self.env_config.mean_actions:
            spaces[keys.NEIGHBOUR_MEAN_ACTION] = gym.spaces.Box(0.0, 1.0, (n, a), np.float32)
            spaces[keys.TEAM_MEAN_ACTION] = gym.spaces.Box(0.0, 1.0, (a,), np.float32)
        if self.env_config.reward_mode == "individual":
            spaces[keys.AGENT_REWARD] = gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)
        return gym.spaces.Dict(spaces)

    # ---- incremental learning hook ---------------------------------------------------------
    def set_active(self, n_active: int, team: str | None = None) -> None:
        """Let the policy control the first `n_active` slots of a learning team (all if None).

        Takes effect on the next step; the other agents act uniformly at random.
        """
        for t in self._learning:
            if team is None or t.name == team:
                if not 0 <= n_active <= t.n:
                    raise ValueError(f"n_active={n_active!r} is invalid; allowed: 0..{t.n}")
                t.set_active(n_active)

    def alive_counts(self) -> dict[str, int]:
        """Agents alive now in each team, opponents included (for throughput accounting)."""
        return {team.name: team.n_alive for team in self._teams}

    @property
    def engine(self):
        """The magent2 `GridWorld` underneath (for tools and tests that compare with it)."""
        return self._engine

    @property
    def teams(self) -> tuple[_Team, ...]:
        """Both sides in game order: name, engine handle, size, engine slots, last actions."""
        return tuple(self._teams)

    @property
    def elapsed_steps(self) -> int:
        """Steps taken in the current episode."""
        return self._t

    def view_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each team's (H, W, C) view, opponents included."""
        return {team.name: team.view_shape for team in self._teams}

    def get_active(self, team: str) -> int:
        return int(next(t for t in self._learning if t.name == team).active.sum())

    def acting_slots(self, team: str) -> tuple[int, int]:
        """(slots the policy acts for, of which the first ones are trained and explore): the
        active prefix twice, or every slot and the active prefix with `inactive: policy`."""
        n_active = self.get_active(team)
        return (self.action_spaces[team].shape[0] if self._policy_inactive else n_active,
                n_active)

    def snapshot(self) -> dict[str, Any]:
        """The map as it is now, for pictures: `map_size`, `walls` (interior wall cells, (k, 2)
        x, y; the border is always walled) and per team (game order) its `name`, `body` side
        in cells, `slots` of the agents alive now, their `positions` ((n_alive, 2) x, y of
        the body's top-left cell) and `active` (bool [N]: the policy controls the slot; a
        random team is all False)."""
        teams = []
        for team in self._teams:
            active = team.active.copy() if team.learning else np.zeros(team.n, dtype=bool)
            teams.append({
                "name": team.name, "body": self.game.body_size[team.index],
                "slots": team.engine_slots.copy(),
                "positions": np.asarray(self._engine.get_pos(team.handle), dtype=np.int32),
                "active": active,
            })
        return {"map_size": self.map_size, "walls": self._walls.copy(), "teams": teams}

    # ---- gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and not self._seeded:
            seed = self._default_seed
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._engine.set_seed(int(seed) % (2**31))
        self._seeded = True
        self._t = 0
        self.agents = list(self.possible_agents)

        engine = self._engine
        engine.reset()
        layout = self.game.place(
            self._rng, self.map_size, self.env_config.team_counts,
            self.env_config.resolved_wall_density,
        )
        self._walls = layout.walls
        if len(layout.walls):
            engine.add_walls(method="custom", pos=layout.walls.tolist())
        self._pooler.set_walls(np.concatenate([self._border, layout.walls]))
        for team, positions in zip(self._teams, layout.team_positions):
            pos = np.concatenate([positions, np.zeros((len(positions), 1), np.int32)], axis=1)
            engine.add_agents(team.handle, method="custom", pos=pos)
            placed = engine.get_num(team.handle)
            if placed != team.n:  # the engine drops blocked positions silently
                raise RuntimeError(f"magent2 placed {placed} of {team.n} {team.name} agents")
            team.reset_tallies()
            ids = engine.get_agent_id(team.handle)
            if not (np.diff(ids) == 1).all():  # slots rely on ids in placement order
                raise RuntimeError(f"magent2 gave {team.name} non-consecutive agent ids")

        observed = self._observe()
        engine.clear_dead()
        obs = {
            team.name: self._team_observation(team, observed, np.zeros(team.n, np.float32))
            for team in self._learning
        }
        return obs, {team.name: {} for team in self._learning}

    def step(self, action_dict: dict[str, Any]):
        engine = self._engine
        for team in self._teams:
            actions = team.last_actions = self._team_actions(team, action_dict)
            if not team.all_alive:  # dead agents' actions are dropped: one per engine agent
                actions = actions[team.engine_slots]
            engine.set_action(team.handle, np.ascontiguousarray(actions))

        game_over = engine.step()
        self._t += 1

        rewards, team_rewards, learned_rewards = [], [], []
        for team in self._teams:
            slot_reward = engine.get_reward(team.handle)  # a new array, in engine order
            if not team.all_alive:
                slot_reward, engine_reward = np.zeros(team.n, dtype=np.float32), slot_reward
                slot_reward[team.engine_slots] = engine_reward
            team_reward = float(slot_reward.sum())
            # (With every slot active, the sum of the same float32 values in the same order.)
            active_reward = (team_reward if team.all_active
                             else float(slot_reward[team.active].sum()))
            rewards.append(slot_reward)
            team_rewards.append(team_reward)
            learned_rewards.append(active_reward if self._active_scope else team_reward)
            team.episode_return += team_reward
            team.active_return += active_reward
        alive_before = [team.n_alive for team in self._teams]
        observed = self._observe()
        deaths = [before - team.n_alive for before, team in zip(alive_before, self._teams)]
        engine.clear_dead()
        for name, counts in self.game.step_events(team_rewards, deaths).items():
            for team, count in zip(self._teams, counts):
                team.events[name] = team.events.get(name, 0) + count

        wiped_out = any(team.n_alive == 0 for team in self._teams)
        terminated = bool(game_over or wiped_out)
        truncated = not terminated and self._t >= self.max_cycles
        obs, reward, infos = {}, {}, {}
        for team in self._learning:
            obs[team.name] = self._team_observation(team, observed, rewards[team.index])
            team_reward = team_rewards[team.index]
            reward[team.name] = learned_rewards[team.index]  # reward_scope's
            infos[team.name] = {
                keys.TEAM_REWARD: team_reward,
                keys.TEAM_REWARD_PER_AGENT: team_reward / team.n,
            }
            if terminated or truncated:
                infos[team.name][keys.EPISODE] = self._episode_metrics(team)
        if terminated or truncated:
            self.agents = []
        terminateds = dict.fromkeys(obs, terminated)
        truncateds = dict.fromkeys(obs, truncated)
        terminateds["__all__"] = terminated
        truncateds["__all__"] = truncated
        return obs, reward, terminateds, truncateds, infos

    # ---- internals ---------------------------------------------------------------------------
    def _team_actions(self, team: _Team, action_dict: dict[str, Any]) -> np.ndarray:
        """A team's actions for every slot: the policy's for active agents of a learning team,
        uniformly random for the others (and for a random opponent)."""
        rng = self._rng
        if not team.learning:
            return rng.integers(0, team.n_actions, team.n, dtype=np.int32)
        if team.name not in action_dict:
            raise KeyError(f"no action for team {team.name!r}; got {list(action_dict)}")
        actions = np.asarray(action_dict[team.name], dtype=np.int32).reshape(team.n)
        # One reduction checks both ends: a negative int32 read as uint32 is >= 2**31.
        if actions.view(np.uint32).max() >= team.n_actions:
            raise ValueError(f"action of team {team.name!r}: {actions.tolist()} is invalid; "
                             f"allowed: integers in [0, {team.n_actions})")
        if not team.all_active and not self._policy_inactive:
            random_slots = ~team.active
            actions = actions.copy()
            actions[random_slots] = rng.integers(0, team.n_actions, int(random_slots.sum()),
                                                 dtype=np.int32)
        return actions

    def _observe(
        self,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray]]]:
        """Per team, before clear_dead: (slots alive now, their positions, their views, their
        pooled state channels).

        Also updates each team's engine order and alive mask. Views are fetched only where
        needed: learning teams, and the hp of an opponent whose hp can change.
        """
        engine = self._engine
        observed = []
        for team in self._teams:
            views = None
            if team.learning or not team.static_hp:
                views, _ = engine.get_observation(team.handle)
            positions = engine.get_pos(team.handle)
            alive_engine = engine.get_alive(team.handle)
            slots = team.engine_slots
            if np.count_nonzero(alive_engine) < len(alive_engine):
                slots = slots[alive_engine]
                positions = positions[alive_engine]
                if views is not None:
                    views = views[alive_engine]
                team.alive[:] = False
                team.alive[slots] = True
                # clear_dead keeps the survivors' order: the next step's engine order.
                team.engine_slots = slots
            # Pooled once per team and step, shared by both teams' states.
            channels = self._pooler.team_channels(positions, self._hp(team, views), team.body_area)
            observed.append((slots, positions, views, channels))
        return observed

    def _team_observation(self, team: _Team, observed, agent_reward: np.ndarray) -> dict:
        slots, positions, views, own_channels = observed[team.index]
        other_channels = observed[1 - team.index][3]

        if len(slots) == team.n:  # everyone alive: engine order == slot order
            team_views = quantize(views)
        else:
            team_views = np.zeros((team.n, *team.view_shape), dtype=np.uint8)
            if len(slots):
                team_views[slots] = quantize(views)

        obs = {
            keys.VIEWS: team_views,
            keys.ALIVE: team.alive.astype(np.uint8),
            keys.ACTIVE: team.active.astype(np.uint8),
            keys.STATE: self._pooler.compose(own_channels, other_channels),
        }
        if self.env_config.mean_actions:
            obs.update(self._mean_actions(team, slots, positions))
        if self.env_config.reward_mode == "individual":
            obs[keys.AGENT_REWARD] = agent_reward.astype(np.float32, copy=True)
        return obs

    def _mean_actions(self, team: _Team, slots: np.ndarray, positions: np.ndarray) -> dict:
        """The previous step's neighbour and team mean actions (zero at reset: nobody has
        acted yet)."""
        n, n_actions = team.n, team.n_actions
        if self._t == 0:
            return {keys.NEIGHBOUR_MEAN_ACTION: np.zeros((n, n_actions), dtype=np.float32),
                    keys.TEAM_MEAN_ACTION: np.zeros(n_actions, dtype=np.float32)}
        everyone = len(slots) == n  # engine order == slot order
        actions = team.last_actions if everyone else team.last_actions[slots]
        neighbour_means = neighbour_mean_actions(
            positions, actions, n_actions, self.env_config.neighbourhood_fraction
        )  # a new float32 array, in engine order
        if not everyone:
            neighbour_means, alive_means = np.zeros((n, n_actions), np.float32), neighbour_means
            neighbour_means[slots] = alive_means
        return {keys.NEIGHBOUR_MEAN_ACTION: neighbour_means,
                keys.TEAM_MEAN_ACTION: team_mean_action(actions, n_actions)}

    @staticmethod
    def _hp(team: _Team, views: np.ndarray | None) -> np.ndarray | None:
        """Alive agents' hp in [0, 1]: the centre of their own view's my_hp channel."""
        if team.static_hp or views is None:
            return None
        h, w = team.view_shape[0] // 2, team.view_shape[1] // 2
        return views[:, h, w, 2]

    def _episode_metrics(self, team: _Team) -> dict[str, float]:
        other = self._teams[1 - team.index]
        n_active = int(team.active.sum())
        metrics = {
            keys.RETURN: team.episode_return,
            keys.RETURN_PER_AGENT: team.episode_return / team.n,
            keys.ACTIVE_RETURN_PER_AGENT: (team.active_return / n_active if n_active
                                           else team.episode_return / team.n),
            keys.LENGTH: self._t,
            keys.ALIVE_AT_END: team.n_alive,
            keys.N_ACTIVE: n_active,
            keys.OPPONENT_RETURN: other.episode_return,
            keys.OPPONENT_RETURN_PER_AGENT: other.episode_return / other.n,
            keys.REWARD_DIFFERENCE: team.episode_return / team.n - other.episode_return / other.n,
        }
        metrics.update(team.events)
        return metrics
