"""The MAgent2 games marlscale plays, declared once each.

A `Game` says what is game-specific: which magent2 module supplies the rules and rewards,
the team names, the population ratio, how the map side scales with the population so that
density stays at MAgent2's default, and how agents are placed exactly. Everything else
(observations, masks, mean actions, rewards) is shared by `team_env.MagentTeamEnv`.

Placement replaces magent2's own ``generate_map`` because the engine's ``add_agents`` silently
drops agents placed on walls or on each other, and its random placement cannot be asked for an
exact count of 2x2 predators. We place with a numpy Generator, so a seed reproduces the map.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from magent2.environments.adversarial_pursuit import adversarial_pursuit as _pursuit
from magent2.environments.battle import battle as _battle


@dataclass(frozen=True)
class Layout:
    """Where everything starts: wall cells and each team's agent positions (x, y)."""

    walls: np.ndarray  # (n_walls, 2) int32
    team_positions: tuple[np.ndarray, np.ndarray]  # (n_i, 2) int32 each, top-left cell


class Game(ABC):
    """One MAgent2 game: its rules module, teams and map layout. Subclasses are declarations."""

    name: str
    module: ModuleType  # magent2 module with get_config, default_reward_args, max_cycles_default
    team_names: tuple[str, str]  # team 0 is the learning team, team 1 the opponent
    opponent_ratio: int  # default opponents per learning-team agent
    min_map_size: int  # magent2's own assertion
    default_wall_density: float  # interior walls as a fraction of map_size**2
    body_size: tuple[int, int]  # side of each team's square body, in cells
    static_hp: tuple[bool, bool]  # hp never changes (so the state needs no observation call)

    @property
    def default_max_cycles(self) -> int:
        return int(self.module.max_cycles_default)

    @property
    def reward_keys(self) -> tuple[str, ...]:
        return tuple(self.module.default_reward_args)

    def magent_config(self, map_size: int, seed: int | None, rewards: dict[str, float]):
        """magent2's own game config (rules, reward events) with reward overrides applied."""
        args = dict(self.module.default_reward_args)
        args.update(rewards)
        return self.module.get_config(map_size, False, seed, **args)

    @abstractmethod
    def default_map_size(self, counts: tuple[int, int]) -> int:
        """Smallest side at which MAgent2's default density holds both teams."""

    @abstractmethod
    def step_events(
        self, team_rewards: list[float], deaths: list[int]
    ) -> dict[str, tuple[int, int]]:
        """Countable events of one step, per team (from each team's summed reward and its
        deaths): tags in pursuit, kills and deaths in battle."""

    @abstractmethod
    def capacity_error(
        self, map_size: int, counts: tuple[int, int], wall_density: float
    ) -> str | None:
        """Why `place` cannot hold these counts on this map, or None when it always can."""

    @abstractmethod
    def place(
        self, rng: np.random.Generator, map_size: int, counts: tuple[int, int], wall_density: float
    ) -> Layout:
        """Exact, random and seed-reproducible positions for every wall and agent."""


def _interior_free_cells(map_size: int) -> np.ndarray:
    """Boolean grid, True inside the border walls the engine adds on reset."""
    free = np.zeros((map_size, map_size), dtype=bool)
    free[1:-1, 1:-1] = True
    return free


def _sample_cells(rng: np.random.Generator, free: np.ndarray, n: int) -> np.ndarray:
    """n distinct free cells, uniformly at random, as (n, 2) int32 (x, y); marks them taken."""
    cells = np.flatnonzero(free)
    chosen = rng.choice(cells, size=n, replace=False) if n else cells[:0]
    free.flat[chosen] = False
    return np.stack(np.unravel_index(chosen, free.shape), axis=1).astype(np.int32)


class AdversarialPursuit(Game):
    """Predators (2x2, 13 actions) tag prey (1x1, 9 actions); prey never die.

    Default density (magent2 ``generate_map``): predators 1.25% of cells, prey 2.5%, walls 3%,
    so 45x45 holds 25 predators, 50 prey and 60 walls.
    """

    name = "adversarial_pursuit"
    module = _pursuit
    team_names = ("predator", "prey")
    opponent_ratio = 2
    min_map_size = 7
    default_wall_density = 0.03
    body_size = (2, 1)
    static_hp = (True, True)
    density = (0.0125, 0.025)

    def default_map_size(self, counts: tuple[int, int]) -> int:
        size = self.min_map_size
        while any(int(d * size * size) < n for d, n in zip(self.density, counts)):
            size += 1
        return size

    def step_events(self, team_rewards, deaths):
        # Each tag costs the tagged prey exactly -1 (magent2's reward rule), whatever the
        # predators' tag penalty: the prey's reward counts the predators' successful tags.
        tags = int(round(-team_rewards[1]))
        return {"tags": (tags, 0), "tagged": (0, tags)}

    def _predator_blocks(self, map_size: int) -> int:
        return ((map_size - 2) // 2) ** 2

    def capacity_error(self, map_size, counts, wall_density):
        n_pred, n_prey = counts
        blocks = self._predator_blocks(map_size)
        if n_pred > blocks:
            return f"at most {blocks} predators fit the 2x2 blocks of a {map_size}-wide map"
        room = (map_size - 2) ** 2 - 4 * n_pred - int(wall_density * map_size * map_size)
        if n_prey > room:
            return f"at most {max(room, 0)} prey fit beside {n_pred} predators and the walls"
        return None

    def place(self, rng, map_size, counts, wall_density):
        n_pred, n_prey = counts
        free = _interior_free_cells(map_size)
        # Predators on a random subset of the 2x2 blocks tiling the interior: this always
        # succeeds up to `capacity`, unlike rejection sampling of overlapping bodies.
        side = (map_size - 2) // 2
        blocks = rng.choice(side * side, size=n_pred, replace=False)
        pred = np.stack([1 + 2 * (blocks // side), 1 + 2 * (blocks % side)], axis=1).astype(
            np.int32
        )
        for dx in (0, 1):
            for dy in (0, 1):
                free[pred[:, 0] + dx, pred[:, 1] + dy] = False
        walls = _sample_cells(rng, free, int(wall_density * map_size * map_size))
        prey = _sample_cells(rng, free, n_prey)
        return Layout(walls=walls, team_positions=(pred, prey))


class Battle(Game):
    """Red vs blue, 21 actions, 10 hp, deaths; the episode ends when a side is wiped out.

    Default layout (magent2 ``generate_map``): two square blocks on a spacing-2 lattice facing
    each other across a gap of 6 columns, about (0.2*map_size)**2 agents per side.
    """

    name = "battle"
    module = _battle
    team_names = ("red", "blue")
    opponent_ratio = 1
    min_map_size = 12
    default_wall_density = 0.0
    body_size = (1, 1)
    static_hp = (False, False)
    gap = 3

    def step_events(self, team_rewards, deaths):
        return {"kills": (deaths[1], deaths[0]), "deaths": (deaths[0], deaths[1])}

    def _block(self, map_size: int, n: int, left: bool) -> tuple[int, int, int, int] | None:
        """(x0, y0, columns, rows) of a team's formation lattice, or None if it cannot fit.

        Square like magent2's when there is room; narrower and taller on small maps, where
        magent2's own square would be clipped at the border and silently lose agents.
        """
        half = map_size // 2
        max_cols = min((half - self.gap - 1) // 2, (map_size - 2 - half - self.gap) // 2 + 1)
        cols = min(math.ceil(math.sqrt(n)), max_cols)
        if cols < 1:
            return None
        rows = math.ceil(n / cols)
        y0 = (map_size - 2 * rows) // 2
        if y0 < 1 or y0 + 2 * (rows - 1) > map_size - 2:
            return None
        x0 = half - self.gap - 2 * cols if left else half + self.gap
        return x0, y0, cols, rows

    def _fits(self, map_size: int, n: int) -> bool:
        return all(self._block(map_size, n, left) is not None for left in (True, False))

    def default_map_size(self, counts: tuple[int, int]) -> int:
        n = max(counts)
        size = self.min_map_size
        while int(0.2 * size) ** 2 < n or not self._fits(size, n):
            size += 1
        return size

    def capacity_error(self, map_size, counts, wall_density):
        if all(self._fits(map_size, n) for n in counts):
            return None
        most = 0
        while self._fits(map_size, most + 1):
            most += 1
        return f"at most {most} agents per side fit the formation of a {map_size}-wide map"

    def place(self, rng, map_size, counts, wall_density):
        positions = []
        free = _interior_free_cells(map_size)
        for team, n in enumerate(counts):
            x0, y0, cols, rows = self._block(map_size, n, left=team == 0)
            # A random subset of the formation's lattice points, in random agent order.
            slots = rng.choice(cols * rows, size=n, replace=False)
            pos = np.stack([x0 + 2 * (slots % cols), y0 + 2 * (slots // cols)], axis=1)
            positions.append(pos.astype(np.int32))
            free[pos[:, 0], pos[:, 1]] = False
        walls = _sample_cells(rng, free, int(wall_density * map_size * map_size))
        return Layout(walls=walls, team_positions=(positions[0], positions[1]))


GAMES: dict[str, Game] = {game.name: game for game in (AdversarialPursuit(), Battle())}
