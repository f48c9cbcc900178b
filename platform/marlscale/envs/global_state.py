"""The compact global state a mixer conditions on.

magent2's own `state()` is the full map, (M, M, 1 + 2 * teams): it grows with the map, so a
mixer's hypernetwork input would grow with the population. We pool it onto a fixed G x G grid:

    state[g_x, g_y] = (wall fraction, own presence, own mean hp, other presence, other mean hp)

presence = fraction of the pooled cell covered by the team's bodies (clipped to 1), mean hp in
[0, 1]; all stored as uint8 round(255 * value). Shape (G, G, 5) whatever the map size.
"""

from __future__ import annotations

import numpy as np

N_CHANNELS = 5


class StatePooler:
    """Pools positions onto a G x G grid for one map; built once per map size."""

    def __init__(self, map_size: int, grid: int):
        self.map_size = map_size
        self.grid = grid
        # Map cell -> pooled cell, along one axis; pooled cells of unequal size when G does
        # not divide M, so we divide by each pooled cell's true area.
        self._bin = (np.arange(map_size) * grid) // map_size
        self._cell = self._bin[:, None] * grid + self._bin[None, :]  # [x, y] -> pooled cell
        per_axis = np.bincount(self._bin, minlength=grid).astype(np.float32)
        self._area = np.maximum(np.outer(per_axis, per_axis).ravel(), 1.0)
        # compose's float32 (G*G, channels) buffer; the walls column changes only with the map.
        self._stacked = np.zeros((grid * grid, N_CHANNELS), dtype=np.float32)

    def cells(self, positions: np.ndarray) -> np.ndarray:
        """Pooled cell index of each (x, y) position."""
        return self._cell[positions[:, 0], positions[:, 1]]

    def set_walls(self, walls: np.ndarray) -> None:
        """Wall fraction per pooled cell; walls include the border."""
        counts = np.bincount(self.cells(walls), minlength=self.grid**2)
        self._stacked[:, 0] = np.minimum(counts / self._area, 1.0).astype(np.float32)

    def team_channels(
        self, positions: np.ndarray, hp: np.ndarray | None, body_area: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(presence, mean hp) per pooled cell for one team's alive agents; hp None = all 1."""
        size = self.grid**2
        cells = self.cells(positions)
        counts = np.bincount(cells, minlength=size).astype(np.float32)
        presence = counts * body_area
        presence /= self._area
        np.minimum(presence, 1.0, out=presence)
        if hp is None:
            mean_hp = np.minimum(counts, 1.0)  # counts are whole numbers: 1 where anyone is
        else:
            mean_hp = np.bincount(cells, weights=hp, minlength=size) / np.maximum(counts, 1.0)
        return presence, mean_hp

    def compose(
        self, own: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """The (G, G, 5) uint8 state from one team's point of view."""
        stacked = self._stacked  # float32, as quantize computes: a float64 hp mean rounds alike
        stacked[:, 1], stacked[:, 2] = own
        stacked[:, 3], stacked[:, 4] = other
        return quantize(stacked).reshape(self.grid, self.grid, N_CHANNELS)


def quantize(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """round(255 * values) as uint8, for values in [0, 1]."""
    scaled = np.multiply(values, 255.0, dtype=np.float32)
    scaled += 0.5
    if out is None:
        return scaled.astype(np.uint8)
    np.copyto(out, scaled, casting="unsafe")
    return out
