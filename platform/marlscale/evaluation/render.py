"""`marlscale render`: one greedy episode of a checkpoint's policy as an animated GIF.

    marlscale render CKPT[:team] [--opponent random|CKPT[:team]] [--side SIDE] [--steps T]
                     [--seed S] [--epsilon E] [--fps F] --out episode.gif

Headless: frames are drawn from the engine's positions with numpy and written with Pillow (our
env drives magent2's GridWorld directly, without the PettingZoo wrapper whose pygame renderer
draws neither a header nor per-agent marks). Each frame shows the map with its walls, every
living agent in its team's colour (the dead disappear), and a header with the step and each
team's return so far. Under incremental learning, the agents that the checkpoint's stage leaves
random are drawn in a light tint of their team's colour, apart from the trained ones (the
paper's Fig 2).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from marlscale import keys
from marlscale.episodes import play_episode
from marlscale.evaluation.evaluate import Evaluation, check_out
from marlscale.specfile import check_value, typed

BACKGROUND = (250, 250, 250)
WALL = (80, 80, 80)
TEXT = (20, 20, 20)
TEAM_COLOURS = ((214, 39, 40), (31, 119, 180))
"""The first team (red, predators) and the second (blue, prey): trained or random team."""
UNTRAINED_COLOURS = ((255, 160, 150), (160, 200, 235))
"""The same teams' agents that the policy's curriculum stage leaves random."""
HEADER = 52
"""Pixels above the map: the step, then one line per team."""
STEPS = typed(kind="int", low=1, optional=True)
"""--steps: at most this many steps (None: the whole episode)."""
FPS = typed(kind="float", low=0, low_open=True, high=100)
"""--fps: the GIF's frames per second."""
FRAME_BYTES_PER_PIXEL = 4
"""Every frame is held until the GIF is written: as RGB (3 bytes a pixel), then indexed (1)."""


def palette() -> list[tuple[int, int, int]]:
    return [BACKGROUND, WALL, TEXT, *TEAM_COLOURS, *UNTRAINED_COLOURS]


class FrameDrawer:
    """Draws a team env's snapshot as an RGB frame: `cell` pixels per map cell + a header."""

    def __init__(self, map_size: int, labels: list[str], cell: int | None = None):
        self.cell = cell or max(4, min(16, 480 // map_size))
        self.map_size = map_size
        self.labels = labels
        self.width = max(map_size * self.cell, 360)
        self.height = HEADER + map_size * self.cell
        self.left = (self.width - map_size * self.cell) // 2  # the map, centred

    def cell_origin(self, x: int, y: int) -> tuple[int, int]:
        """The pixel (row, column) of map cell (x, y)'s top-left corner."""
        return HEADER + y * self.cell, self.left + x * self.cell

    def draw(self, snapshot: dict[str, Any], step: int, returns: list[float]):
        from PIL import Image, ImageDraw

        c, m = self.cell, self.map_size
        grid = np.empty((m, m, 3), dtype=np.uint8)  # [y, x]
        grid[:] = BACKGROUND
        grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = WALL
        walls = snapshot["walls"]
        if len(walls):
            grid[walls[:, 1], walls[:, 0]] = WALL
        for index, team in enumerate(snapshot["teams"]):
            active = team["active"][team["slots"]]
            colours = np.where(active[:, None] | ~team["active"].any(),
                               TEAM_COLOURS[index], UNTRAINED_COLOURS[index]).astype(np.uint8)
            for dx in range(team["body"]):
                for dy in range(team["body"]):
                    grid[team["positions"][:, 1] + dy, team["positions"][:, 0] + dx] = colours
        pixels = np.empty((self.height, self.width, 3), dtype=np.uint8)
        pixels[:] = BACKGROUND
        pixels[HEADER:, self.left:self.left + m * c] = grid.repeat(c, axis=0).repeat(c, axis=1)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        draw.text((4, 1), f"step {step}", fill=TEXT)
        for index, (label, value) in enumerate(zip(self.labels, returns)):
            team, y = snapshot["teams"][index], 18 + 16 * index
            text = f"{label}: return {value:+.1f}, {len(team['slots'])} alive"
            draw.rectangle((4, y + 2, 12, y + 10), fill=TEAM_COLOURS[index])
            trained = int(team["active"].sum())
            if 0 < trained < len(team["active"]):  # a curriculum stage leaves some random
                draw.rectangle((14, y + 2, 22, y + 10), fill=UNTRAINED_COLOURS[index])
                text += f"; {trained} of {len(team['active'])} trained, light: random"
            draw.text((26, y), text, fill=TEXT)
        return image


def check_memory(env_config, drawer: FrameDrawer) -> None:
    """Refuse, before the episode, a GIF whose frames (held until it is written) would not fit
    this machine's memory: they grow with --steps, --cell and the map (N). (Its env was
    checked by `Evaluation.prepare`.)"""
    from marlscale.algorithms import memory

    frames = env_config.resolved_max_cycles + 1  # the reset's frame, then one per step
    needed = frames * drawer.width * drawer.height * FRAME_BYTES_PER_PIXEL
    available = memory.HEADROOM * memory.machine_bytes()
    if needed > available:
        raise ValueError(
            f"--steps/--cell: the GIF's {frames:,} frames of {drawer.width:,} x "
            f"{drawer.height:,} pixels (cell {drawer.cell}, map {env_config.resolved_map_size}) "
            f"need about {needed / memory.GIB:,.1f} GiB, more than {memory.HEADROOM:.0%} of "
            f"this machine's {memory.machine_bytes() / memory.GIB:,.1f} GiB; allowed: fewer "
            "--steps or a smaller --cell")


def render(checkpoint: str, out: str | os.PathLike, opponent: str | None = None,
           side: str | None = None, steps: int | None = None, seed: int = 0,
           epsilon: float = 0.0, fps: float = 10.0, cell: int | None = None) -> dict[str, Any]:
    """Play one episode (at most `steps` steps) and write it as a GIF; what was drawn."""
    from PIL import Image

    out = check_out(out)
    check_value("--steps", steps, STEPS)
    check_value("--fps", fps, FPS)
    evaluation = Evaluation.prepare(checkpoint, opponent, side, episodes=1, seed=seed,
                                    epsilon=epsilon)
    env_config = evaluation.env_config
    if steps is not None:
        values = env_config.to_dict()
        values["max_cycles"] = min(steps, env_config.resolved_max_cycles)
        env_config = type(env_config).from_dict(values)
    names = list(env_config.game_spec.team_names)
    contestants = evaluation.sides
    labels = [f"{team} {contestants[team].algorithm}" for team in names]
    drawer = FrameDrawer(env_config.resolved_map_size, labels, cell)
    check_memory(env_config, drawer)

    from marlscale.envs.team_env import MagentTeamEnv

    env = MagentTeamEnv(env_config)
    policies = {s: c.policy.load_module() for s, c in contestants.items() if not c.is_random}
    n_active = {s: c.n_active for s, c in contestants.items() if not c.is_random}
    game = evaluation.games()[0]
    frames, alive, returns = [], [], [0.0, 0.0]

    def on_step(env, step, infos):
        snapshot = env.snapshot()
        for index, team in enumerate(names):
            returns[index] += infos.get(team, {}).get(keys.TEAM_REWARD, 0.0)
        frames.append(drawer.draw(snapshot, step, returns))
        alive.append([len(t["slots"]) for t in snapshot["teams"]])

    metrics = play_episode(env, game, policies, n_active, on_step=on_step).metrics
    colours = Image.new("P", (1, 1))
    colours.putpalette([value for colour in palette() for value in colour])
    indexed = [f.quantize(palette=colours, dither=Image.Dither.NONE) for f in frames]
    handle, temporary = tempfile.mkstemp(suffix=".gif", dir=out.parent)
    os.close(handle)
    try:
        indexed[0].save(temporary, save_all=True, append_images=indexed[1:],
                        duration=int(round(1000 / fps)), loop=0)
        os.replace(temporary, out)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return {"out": str(out.resolve()), "frames": len(frames), "alive": alive,
            "size": [drawer.width, drawer.height], "cell": drawer.cell,
            "map_size": env.map_size, "map_origin": list(drawer.cell_origin(0, 0)),
            "sides": {s: c.describe() for s, c in contestants.items()},
            "returns": {team: metrics[team][keys.RETURN] for team in names}}
