"""The report's figures, drawn with matplotlib (Agg: no display needed).

Each function takes the tables of `reports/aggregate.py` and writes one PNG. Every algorithm
keeps its colour in every figure (Okabe-Ito, a colour-blind-safe palette); every axis says
what it shows and in what unit; N gets a log scale where it spans a decade. Figures are sized
to stay readable at the width of a README image (about 900 px).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

from marlscale import stats  # noqa: E402
from marlscale.algorithms.registry import ALGORITHMS  # noqa: E402

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
             "#000000"]
ALGORITHM_COLOURS = {"qmix": "#0072B2", "mfqmix": "#D55E00", "mfq": "#009E73",
                     "iql": "#CC79A7", "vdn": "#E69F00"}
RANDOM_COLOUR = "#7f7f7f"
LINE_STYLES = ["-", "--", ":", "-.", (0, (10, 3)), (0, (1, 4)),
               (0, (6, 1.5, 1, 1.5, 1, 1.5)), (0, (3, 1, 3, 4))]
"""Variants of one algorithm: 8 dash patterns that stay apart (an ablation has 6 or more)."""
MARKERS = ["o", "s", "^", "D"]
PANEL = (4.6, 3.4)  # inches per panel
MAX_COLUMNS = 3
DPI = 120
ENV_STEPS_LABEL = "env steps"
RETURN_LABEL = "return per agent (per episode)"

plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
                     "legend.fontsize": 10, "axes.grid": True, "grid.alpha": 0.3})


def colour(algorithm: str) -> str:
    """An algorithm's colour, the same in every figure (registry order for new ones)."""
    if algorithm in ALGORITHM_COLOURS:
        return ALGORITHM_COLOURS[algorithm]
    names = sorted(ALGORITHMS)
    index = names.index(algorithm) if algorithm in names else len(names)
    return OKABE_ITO[index % len(OKABE_ITO)]


def label(algorithm: str, variant: str = "") -> str:
    return algorithm.upper() + (f" \u00b7 {variant}" if variant else "")


def log_n(axis, values) -> None:
    """A log-scaled N axis where N spans a decade, ticks at the N values themselves."""
    values = sorted({int(v) for v in values})
    if values and max(values) >= 10 * min(values):
        axis.set_xscale("log")
    axis.set_xticks(values)
    axis.set_xticklabels([str(v) for v in values])
    axis.minorticks_off()


def _grid(panels: int, height_scale: float = 1.0, columns: int | None = None):
    columns = columns or min(panels, MAX_COLUMNS)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, squeeze=False, layout="constrained",
                                figsize=(PANEL[0] * columns, PANEL[1] * rows * height_scale))
    flat = list(axes.flat)
    for extra in flat[panels:]:
        extra.set_visible(False)
    return figure, flat[:panels]


def _save(figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def _band(axis, frame: pd.DataFrame, x: str, colour_: str, style: str, text: str) -> None:
    axis.plot(frame[x], frame["mean"], color=colour_, linestyle=style, label=text, lw=1.8)
    spread = frame["spread"].fillna(0.0)
    if spread.any():
        axis.fill_between(frame[x], frame["mean"] - spread, frame["mean"] + spread,
                          color=colour_, alpha=0.18, lw=0)


def _legend(figure, axes) -> None:
    handles = {}
    for axis in axes:
        for handle, text in zip(*axis.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    if handles:  # as many columns as the figure's width holds labels of this length
        longest = max(len(text) for text in handles)
        fits = int(figure.get_figwidth() / (0.75 + 0.07 * longest))
        columns = max(1, min(len(handles), 3, fits))
        rows = math.ceil(len(handles) / columns)
        if rows > 1:  # room for the legend's rows below, not taken from the panels
            figure.set_figheight(figure.get_figheight() + 0.22 * (rows - 1))
        figure.legend(handles.values(), handles.keys(), loc="outside lower center",
                      ncols=columns, frameon=False)


def _ylabels(axes, text: str) -> None:
    """The y label on the first panel of each row only (panels share their meaning)."""
    for axis in axes:
        if axis.get_subplotspec().is_first_col():
            axis.set_ylabel(text)


def _suptitle(figure, axes, title: str, ci_label: str) -> None:
    """The figure's title and what its bands mean (on two lines over a single panel)."""
    figure.suptitle(f"{title}{chr(10) if len(axes) < 2 else ' '}(mean \u00b1 {ci_label})",
                    fontsize=12)


def _styles(variants) -> dict[str, str]:
    return {v: LINE_STYLES[i % len(LINE_STYLES)] for i, v in enumerate(sorted(set(variants)))}


def learning_curves(curves: pd.DataFrame, ci_label: str, path: Path, title: str,
                    random: dict[int, float] | None = None) -> Path:
    """One panel per N, one line per algorithm (and variant): mean +- spread over seeds;
    `random`: the random policy's return per agent by N, drawn as a dotted line."""
    sizes = sorted(curves["n_agents"].unique())
    figure, axes = _grid(len(sizes))
    styles = _styles(curves["variant"])
    for axis, n in zip(axes, sizes):
        for (algorithm, variant), frame in curves[curves["n_agents"] == n].groupby(
                ["algorithm", "variant"], sort=True):
            _band(axis, frame, "env_steps", colour(algorithm), styles[variant],
                  label(algorithm, variant))
        if random and n in random:
            axis.axhline(random[n], color=RANDOM_COLOUR, linestyle=":", lw=1.4,
                         label="random policy")
        axis.set_title(f"N = {n}")
        axis.set_xlabel(ENV_STEPS_LABEL)
    _ylabels(axes, RETURN_LABEL)
    _suptitle(figure, axes, title, ci_label)
    _legend(figure, axes)
    return _save(figure, path)


def _error_bars(frame: pd.DataFrame):
    """matplotlib's yerr: the symmetric `spread`, or from an interval's `low` and `high`
    where the frame has one (an IQM's bootstrap interval)."""
    if "high" not in frame:
        return frame["spread"].fillna(0.0)
    return np.vstack([(frame["mean"] - frame["low"]).fillna(0.0),
                      (frame["high"] - frame["mean"]).fillna(0.0)])


def scaling(summary: pd.DataFrame, frontier: pd.DataFrame, what: str, ci_label: str,
            path: Path, title: str, centre: str = "mean") -> Path:
    """Final return against N, per algorithm (and variant), the random level, frontiers;
    `centre` 'mean' (bars: mean +- `spread`) or 'iqm' (bars: `low` to `high`)."""
    figure, (axis,) = _grid(1, height_scale=1.25)
    figure.set_size_inches(PANEL[0] * 1.9, PANEL[1] * 1.3)
    styles = _styles(summary["variant"])
    for i, ((algorithm, variant), frame) in enumerate(
            summary.groupby(["algorithm", "variant"], sort=True)):
        frame = frame.sort_values("n_agents")
        axis.errorbar(frame["n_agents"], frame["mean"], yerr=_error_bars(frame),
                      color=colour(algorithm), linestyle=styles[variant], capsize=3,
                      marker=MARKERS[i % len(MARKERS)], lw=1.8, label=label(algorithm, variant))
        edge = frontier[(frontier["algorithm"] == algorithm) & (frontier["variant"] == variant)]
        n = edge["frontier"].iloc[0] if len(edge) else None
        if n is not None and not pd.isna(n):
            y = frame.loc[frame["n_agents"] == n, "mean"].iloc[0]
            axis.scatter([n], [y], s=260, facecolors="none", edgecolors=colour(algorithm),
                         linewidths=2, zorder=5)
    random = summary.groupby("n_agents")["random_level"].mean().dropna()
    if len(random):
        axis.plot(random.index, random.to_numpy(), color=RANDOM_COLOUR, linestyle="--", lw=1.5,
                  marker="x", label="random policy")
    axis.axhline(0.0, color="black", lw=0.8)
    axis.scatter([], [], s=120, facecolors="none", edgecolors="black", linewidths=2,
                 label="frontier: largest N\nabove random and\nclearly above 0")
    log_n(axis, summary["n_agents"])
    axis.set_xlabel("N (learning agents)")
    axis.set_ylabel(what)
    prefix = "mean \u00b1 " if centre == "mean" else "IQM, "
    axis.set_title(f"{title} ({prefix}{ci_label})")
    # beside the axes: with several lines the best corner inside still hides points
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, borderaxespad=0)
    return _save(figure, path)


def improvement(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Probability of improvement per pair of learners, one panel per (variant, N): P(X > Y)
    with its 95% bootstrap interval, against the 0.5 of no difference."""
    panels = list(table.groupby(["variant", "n_agents"], sort=True))
    pairs = max(len(group) for _, group in panels)
    figure, axes = _grid(len(panels), height_scale=max(1.0, (0.3 * pairs + 1.3) / PANEL[1]))
    for axis, ((variant, n), group) in zip(axes, panels):
        group = group.reset_index(drop=True)
        ys = np.arange(len(group))[::-1]
        axis.errorbar(group["p"], ys, xerr=np.vstack([group["p"] - group["low"],
                                                      group["high"] - group["p"]]),
                      fmt="o", color="black", capsize=4, lw=1.6)
        axis.axvline(0.5, color=RANDOM_COLOUR, linestyle="--", lw=1.2)
        axis.set_yticks(ys, [f"{x.upper()} > {y.upper()}" for x, y in zip(group["x"],
                                                                          group["y"])])
        axis.set_xlim(-0.02, 1.02)
        axis.set_ylim(-0.6, len(group) - 0.4)
        axis.set_xlabel("P(X > Y)")
        axis.set_title(f"N = {n}" + (f" \u00b7 {variant}" if variant else ""))
    figure.suptitle(f"{title}\n(95% bootstrap CI over seeds; 0.5: no difference)",
                    fontsize=12)
    return _save(figure, path)


def transfer(summary: pd.DataFrame, direct: pd.DataFrame, direct_what: str, ci_label: str,
             path: Path) -> Path:
    """Zero-shot transfer: return per agent against the N played (log axis), one line per
    (algorithm, variant, N trained at) with error bars over seeds (`spread`), the random
    level (grey, dashed) and, where `direct` (algorithm, variant, n_agents, mean) holds a
    policy of a line's algorithm and variant trained at an N played, a star at its final
    return (`direct_what`); a star of another variant, coloured like the line's algorithm,
    would read as that line's."""
    figure, (axis,) = _grid(1)
    figure.set_size_inches(PANEL[0] * 1.9, PANEL[1] * 1.3)
    trained = sorted(summary["n_trained"].unique())
    styles = {n: LINE_STYLES[i % len(LINE_STYLES)] for i, n in enumerate(trained)}
    markers = {n: MARKERS[i % len(MARKERS)] for i, n in enumerate(trained)}
    played = sorted(summary["n_played"].unique())
    lines = summary.groupby(["algorithm", "variant", "n_trained"], sort=True)
    for i, ((algorithm, variant, n0), frame) in enumerate(lines):
        frame = frame.sort_values("n_played")
        dodge = 1 + 0.012 * (i - (lines.ngroups - 1) / 2)  # error bars side by side (log x)
        axis.errorbar(frame["n_played"] * dodge, frame["mean"],
                      yerr=frame["spread"].fillna(0.0),
                      color=colour(algorithm), linestyle=styles[n0], marker=markers[n0],
                      capsize=3, lw=1.8, label=f"{label(algorithm, variant)}, trained at "
                                               f"N={n0}")
    random = summary.groupby("n_played")["random_level"].mean().dropna()
    if len(random):
        axis.plot(random.index, random.to_numpy(), color=RANDOM_COLOUR, linestyle="--", lw=1.5,
                  marker="x", label="random policy")
    lined = set(zip(summary["algorithm"], summary["variant"]))
    here = direct[direct["n_agents"].isin(played)
                  & np.array([key in lined for key in zip(direct["algorithm"],
                                                          direct["variant"])], dtype=bool)]
    for algorithm, frame in here.groupby("algorithm", sort=True):
        axis.scatter(frame["n_agents"], frame["mean"], marker="*", s=260, zorder=6,
                     color=colour(algorithm), edgecolors="black", linewidths=0.8)
    if len(here):
        axis.scatter([], [], marker="*", s=160, color="white", edgecolors="black",
                     linewidths=0.8, label=f"trained at that N:\n{direct_what}")
    axis.axhline(0.0, color="black", lw=0.8)
    axis.set_xscale("log")
    log_n(axis, played)
    axis.set_xlabel("N played (learning agents), log scale")
    axis.set_ylabel(RETURN_LABEL)
    axis.set_title(f"Zero-shot transfer across N (mean \u00b1 {ci_label})")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, borderaxespad=0)
    return _save(figure, path)


def reward_modes(curves: pd.DataFrame, what: str, ci_label: str, path: Path) -> Path:
    """Per algorithm: team reward and individual reward side by side, one line per N."""
    rows = sorted({(a, v) for a, v in zip(curves["algorithm"], curves["variant"])})
    modes = sorted(curves["reward_mode"].unique(), key=lambda m: m != "team")
    figure, axes = _grid(len(rows) * len(modes), columns=len(modes))
    sizes = sorted(curves["n_agents"].unique())
    shades = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(sizes)))
    for i, (algorithm, variant) in enumerate(rows):
        mine = curves[(curves["algorithm"] == algorithm) & (curves["variant"] == variant)]
        low, high = mine["mean"].min(), mine["mean"].max()
        for j, mode in enumerate(modes):
            axis = axes[i * len(modes) + j]
            for n, shade in zip(sizes, shades):
                frame = mine[(mine["reward_mode"] == mode) & (mine["n_agents"] == n)]
                if len(frame):
                    _band(axis, frame, "env_steps", shade, "-", f"N = {n}")
            axis.set_title(f"{label(algorithm, variant)}:\n{mode} reward", fontsize=11)
            axis.set_xlabel(ENV_STEPS_LABEL)
            margin = 0.05 * (high - low or 1.0)
            axis.set_ylim(low - margin, high + margin)
    _ylabels(axes, RETURN_LABEL)
    _suptitle(figure, axes, f"Team against individual reward: {what}", ci_label)
    _legend(figure, axes)
    return _save(figure, path)


def _stage_boundaries(trained: pd.DataFrame) -> list[float]:
    """The env steps at which the (seed-mean) count of trained agents grows: each stage's
    start after the first."""
    frame = trained.sort_values("env_steps")
    grows = frame["mean"].diff() > 0
    return frame.loc[grows, "env_steps"].tolist()


def incremental(curves: pd.DataFrame, active: pd.DataFrame, what: str, ci_label: str,
                path: Path) -> Path:
    """Per (algorithm, N): with and without incremental learning; trained agents on the
    right-hand axis."""
    panels = sorted(set(zip(curves["algorithm"], curves["variant"], curves["n_agents"])))
    figure, axes = _grid(len(panels))
    for axis, (algorithm, variant, n) in zip(axes, panels):
        mine = curves[(curves["algorithm"] == algorithm) & (curves["variant"] == variant)
                      & (curves["n_agents"] == n)]
        for schedule, frame in mine.groupby("incremental", sort=True):
            style = "--" if schedule == "none" else "-"
            text = "without incremental" if schedule == "none" else f"incremental ({schedule})"
            _band(axis, frame, "env_steps", colour(algorithm), style, text)
        trained = active[(active["algorithm"] == algorithm) & (active["variant"] == variant)
                         & (active["n_agents"] == n)]
        right = axis.twinx()
        right.grid(False)
        right.step(trained["env_steps"], trained["mean"], where="post", color=RANDOM_COLOUR,
                   lw=1.2, label="trained agents (right axis)")
        for boundary in _stage_boundaries(trained):
            axis.axvline(boundary, color=RANDOM_COLOUR, linestyle=":", lw=0.9, zorder=0)
        right.set_ylim(0, n * 1.05)
        right.yaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_ylabel("trained agents", color=RANDOM_COLOUR)
        axis.set_title(f"{label(algorithm, variant)}, N = {n}", fontsize=11)
        axis.set_xlabel(ENV_STEPS_LABEL)
        axis.plot([], [], color=RANDOM_COLOUR, lw=1.2, label="trained agents (right axis)")
        axis.plot([], [], color=RANDOM_COLOUR, linestyle=":", lw=0.9,
                  label="stage boundary (trained agents grow)")
    _ylabels(axes, RETURN_LABEL)
    _suptitle(figure, axes, f"Incremental learning: {what}", ci_label)
    _legend(figure, axes)
    return _save(figure, path)


def ablations(frame: pd.DataFrame, reference: str, what: str, ci_label: str,
              path: Path) -> Path:
    """Left: each ablation's final return (mean +- the report's spread); right: its effect
    against the reference with the 95% interval of the difference, one row per ablation (and
    algorithm, variant, N where the runs hold several), top to bottom in `frame`'s order."""
    groups = frame.groupby(["algorithm", "variant", "n_agents"], sort=True).ngroups
    names = [row["ablation"] if groups == 1 else
             f"{row['ablation']} \u00b7 {label(row['algorithm'], row['variant'])} "
             f"N={row['n_agents']}" for row in frame.to_dict("records")]
    height = max(PANEL[1], 0.45 * len(frame) + 1.2)
    figure, (left, right) = plt.subplots(1, 2, sharey=True, layout="constrained",
                                         figsize=(PANEL[0] * 2.2, height))
    y = np.arange(len(frame))[::-1]
    colours = [colour(a) for a in frame["algorithm"]]
    spread = frame["spread"].fillna(0.0)
    for axis, x, low, high, title in (
            (left, frame["mean"], frame["mean"] - spread, frame["mean"] + spread,
             f"final {what}\n(mean \u00b1 {ci_label})"),
            (right, frame["effect"], frame["ci95_low"], frame["ci95_high"],
             f"effect: minus {reference}\n(95% interval of the difference)")):
        shown = x.notna().to_numpy()
        axis.errorbar(x[shown], y[shown], xerr=[(x - low)[shown], (high - x)[shown]],
                      fmt="none", ecolor="black", capsize=4, lw=1.2)
        axis.scatter(x[shown], y[shown], c=[c for c, s in zip(colours, shown) if s], s=50,
                     zorder=3)
        axis.axvline(0.0, color="black", lw=0.8)
        axis.set_title(title)
    for row, reference_row in zip(y, frame["ablation"] == reference):
        if reference_row:
            right.text(0.0, row, f"  {reference} (reference)", va="center", fontsize=9)
    left.set_yticks(y)
    left.set_yticklabels(names)
    left.set_xlabel(RETURN_LABEL)
    right.set_xlabel(f"difference in {RETURN_LABEL}")
    return _save(figure, path)


def league_matrix(league: pd.DataFrame, path: Path) -> Path:
    """Cross-play reward differences as an annotated heat map with 95% CIs (one per side)."""
    low, high, over = stats.ci_columns(league)
    values = league["reward_difference"]
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    return _cross_play_maps(league, path, "reward_difference", (low, high), "{:+.2f}",
                            f"reward difference per agent\n(row minus column, 95% CI over "
                            f"{over})", "reward difference per agent", (-bound, bound))


def league_improvement(league: pd.DataFrame, path: Path) -> Path:
    """The league heat map's companion: P(row better than column) per cell, with its 95%
    cluster-bootstrap interval over training seeds (one map per side)."""
    return _cross_play_maps(league, path, "improvement",
                            ("improvement_ci95_low", "improvement_ci95_high"), "{:.2f}",
                            "probability of improvement: P(row's return per\nagent > "
                            "column's), 95% CI over seeds", "P(row better than column)",
                            (0.0, 1.0))


def _cross_play_maps(league: pd.DataFrame, path: Path, value: str, interval: tuple[str, str],
                     number: str, title: str, colour_label: str,
                     limits: tuple[float, float]) -> Path:
    """One annotated heat map per side of `value` (row algorithm x column algorithm, random
    last), each cell '`number`\n[low, high]'; diverging colours centred between `limits`."""
    sides = sorted(league["side"].unique())
    cells = max(league["algorithm"].nunique(), league["column_algorithm"].nunique())
    figure, axes = _grid(len(sides), height_scale=1.2)
    figure.set_size_inches(max(PANEL[0], 1.5 * cells + 2.2) * len(sides),
                           max(PANEL[1] * 1.2, 1.1 * cells + 1.8))
    low, high = interval
    for axis, side in zip(axes, sides):
        mine = league[league["side"] == side]
        rows = sorted(mine["algorithm"].unique())
        columns = sorted(c for c in mine["column_algorithm"].unique() if c != "random")
        columns += ["random"] if (mine["column_algorithm"] == "random").any() else []
        matrix = np.full((len(rows), len(columns)), np.nan)
        for _, cell in mine.iterrows():
            matrix[rows.index(cell["algorithm"]), columns.index(cell["column_algorithm"])] = \
                cell[value]
        image = axis.imshow(matrix, cmap="RdBu", vmin=limits[0], vmax=limits[1])
        for r, c in zip(*np.where(np.isnan(matrix))):
            axis.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, color="#e8e8e8"))
            axis.text(c, r, "not played", ha="center", va="center", fontsize=8, color="#555555")
        middle, reach = (limits[0] + limits[1]) / 2, (limits[1] - limits[0]) / 2
        for _, cell in mine.iterrows():
            r, c = rows.index(cell["algorithm"]), columns.index(cell["column_algorithm"])
            dark = abs(cell[value] - middle) > 0.6 * reach
            axis.text(c, r, f"{number.format(cell[value])}\n"
                      f"{stats.format_interval(cell[low], cell[high], signed=limits[0] < 0)}",
                      ha="center",
                      va="center", fontsize=8, color="white" if dark else "black")
        axis.set_xticks(range(len(columns)), [c.upper() for c in columns])
        axis.set_yticks(range(len(rows)), [r.upper() for r in rows])
        axis.set_xlabel("opponent")
        axis.set_ylabel("policy" + ("" if side == "both" else f" (playing {side})"))
        axis.grid(False)
        axis.set_title(title)
        figure.colorbar(image, ax=axis, shrink=0.8, label=colour_label)
    return _save(figure, path)


def head_to_head(curves: pd.DataFrame, ci_label: str, path: Path) -> Path:
    """Reward difference over training per pair (learning team minus its learned opponent)."""
    sizes = sorted(curves["n_agents"].unique())
    figure, axes = _grid(len(sizes))
    for axis, n in zip(axes, sizes):
        mine = curves[curves["n_agents"] == n]
        styles = _styles(mine["opponent_algorithm"])
        for (algorithm, opponent), frame in mine.groupby(["algorithm", "opponent_algorithm"],
                                                         sort=True):
            _band(axis, frame, "env_steps", colour(algorithm), styles[opponent],
                  f"{algorithm.upper()} vs {opponent.upper()}")
        axis.axhline(0.0, color="black", lw=0.8)
        axis.set_title(f"N = {n} per team")
        axis.set_xlabel(ENV_STEPS_LABEL)
    _ylabels(axes, "reward difference per agent")
    _suptitle(figure, axes, "Head-to-head training: first team minus second", ci_label)
    _legend(figure, axes)
    return _save(figure, path)


def throughput(table: pd.DataFrame, path: Path, ci_label: str) -> Path:
    """End-to-end env-steps/s and agent-steps/s against N, per algorithm."""
    figure, axes = _grid(2)
    for axis, (column, what) in zip(axes, [("env_steps_per_s", "env steps / s"),
                                           ("agent_steps_per_s", "agent steps / s")]):
        for i, (algorithm, frame) in enumerate(table.groupby("algorithm", sort=True)):
            frame = frame.sort_values("n_agents")
            axis.errorbar(frame["n_agents"], frame[column],
                          yerr=frame[f"{column}_spread"].fillna(0.0), color=colour(algorithm),
                          marker=MARKERS[i % len(MARKERS)], capsize=3, lw=1.8,
                          label=algorithm.upper())
        log_n(axis, table["n_agents"])
        axis.set_xlabel("N (learning agents)")
        axis.set_ylabel(what)
        axis.set_ylim(bottom=0)
    axes[0].set_title("env steps per second")
    axes[1].set_title("agent steps per second")
    _suptitle(figure, axes, "Training throughput, end to end", ci_label)
    _legend(figure, axes)
    return _save(figure, path)


def _short_steps(value: float, _position=None) -> str:
    """Env steps as 500, 10k, 1.5M."""
    for size, unit in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def _budget_ticks(axis, steps) -> None:
    """A log env-steps x axis ticked at `steps`, labelled 10k, 20k, 1.5M, ..."""
    axis.set_xscale("log")
    axis.set_xticks(list(steps))
    axis.set_xticklabels([_short_steps(s) for s in steps])
    axis.minorticks_off()


def _variant_shades(lines) -> dict[tuple[str, str], tuple]:
    """(algorithm, variant) -> its colour: the algorithm's own for its first variant, then
    lighter ones, so points of two variants of one learner stay apart."""
    shades = {}
    for algorithm in sorted({a for a, _ in lines}):
        variants = sorted(v for a, v in lines if a == algorithm)
        base = np.array(matplotlib.colors.to_rgb(colour(algorithm)))
        for k, variant in enumerate(variants):
            mix = 0.55 * k / max(1, len(variants) - 1)
            shades[(algorithm, variant)] = tuple(base + (1.0 - base) * mix)
    return shades


def steps_to_threshold(steps: pd.DataFrame, alphas: pd.DataFrame, levels, path: Path) -> Path:
    """One panel per threshold: env steps to reach it against N (log-log), one colour per
    learner, each trial a point (filled: reached; open triangle at its last evaluation:
    censored, needs more), and each learner's fitted line with its alpha."""
    figure, axes = _grid(len(levels), height_scale=1.5)
    sizes = sorted(steps["n_agents"].unique())
    lines = sorted(set(zip(steps["algorithm"], steps["variant"])))
    styles = _styles(steps["variant"])
    shift = {line: 1.0 + 0.05 * (i - (len(lines) - 1) / 2) for i, line in enumerate(lines)}
    shades = _variant_shades(lines)
    top = max(steps["steps"].max(skipna=True) if steps["steps"].notna().any() else 0.0,
              steps["censored_at"].max())
    for axis, level in zip(axes, levels):
        mine = steps[steps["threshold"] == level.value]
        for algorithm, variant in lines:
            line = mine[(mine["algorithm"] == algorithm) & (mine["variant"] == variant)]
            shade = shades[(algorithm, variant)]
            kept, cut = line[~line["censored"]], line[line["censored"]]
            first = kept["at_first_evaluation"].astype(bool)
            for chosen, marker in ((kept[~first], "o"), (kept[first], "v")):
                axis.scatter(chosen["n_agents"] * shift[(algorithm, variant)],
                             chosen["steps"], color=shade, marker=marker, s=28, zorder=3)
            axis.scatter(cut["n_agents"] * shift[(algorithm, variant)], cut["censored_at"],
                         marker="^", facecolors="none", edgecolors=shade, s=60, linewidths=1.5,
                         zorder=3)
            fit = alphas[(alphas["algorithm"] == algorithm) & (alphas["variant"] == variant)
                         & (alphas["threshold"] == level.value)]
            text = label(algorithm, variant)
            if len(fit) and not pd.isna(fit["alpha"].iloc[0]):
                alpha = fit["alpha"].iloc[0]
                intercept = fit["intercept"].iloc[0]  # the fit's own line
                x = np.array([kept["n_agents"].min(), kept["n_agents"].max()], dtype=float)
                axis.plot(x, np.exp(intercept + alpha * np.log(x)), color=shade,
                          linestyle=styles[variant], lw=1.6)
                low, high = fit["low"].iloc[0], fit["high"].iloc[0]
                text += f": \u03b1 = {alpha:.2f}" + ("" if pd.isna(low) else
                                                     f" [{low:.2f}, {high:.2f}]")
            else:
                text += ": \u03b1 n/a (reached at < 2 N)"
            axis.plot([], [], color=shade, linestyle=styles[variant], marker="o", lw=1.6,
                      label=text)
        axis.set_yscale("log")  # ticks at 1, 2, 5 x 10^k env steps, written 5k, 10k, ...
        axis.set_ylim(top=top * 1.4)  # the censored triangles clear of the frame
        axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.yaxis.set_major_formatter(FuncFormatter(_short_steps))
        axis.yaxis.set_minor_formatter(NullFormatter())
        log_n(axis, sizes)
        axis.set_title(f"threshold: greedy return {level.label} per agent", fontsize=11)
        axis.set_xlabel("N (learning agents)")
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8,
                    frameon=False)
    _ylabels(axes, "env steps to reach the threshold")
    figure.suptitle("Sample complexity: env steps to a greedy return, against N (log-log; "
                    "lines: fitted log steps = a + \u03b1 log N)", fontsize=12)
    markers = [Line2D([], [], color="black", marker="o", linestyle="none", markersize=5),
               Line2D([], [], color="black", marker="v", linestyle="none", markersize=5),
               Line2D([], [], color="black", marker="^", markerfacecolor="none",
                      linestyle="none", markersize=7)]
    figure.legend(markers, ["a trial: the first env step at the threshold (interpolated)",
                            "reached by its first evaluation: at or before that step",
                            "censored: not reached by its last evaluation, drawn there "
                            "(needs more)"], loc="outside lower center", ncols=1, frameon=False)
    return _save(figure, path)


def frontier_budget(edges_at: dict[int, pd.DataFrame], sizes, path: Path) -> Path:
    """The frontier N against the budget it is read at, one line per learner."""
    figure, (axis,) = _grid(1)
    figure.set_size_inches(PANEL[0] * 1.9, PANEL[1] * 1.3)
    levels = ["none", *[str(int(n)) for n in sizes]]
    lines = sorted({(a, v) for edges in edges_at.values()
                    for a, v in zip(edges["algorithm"], edges["variant"])})
    styles = _styles([v for _, v in lines])
    for i, (algorithm, variant) in enumerate(lines):
        x, y = [], []
        for steps, edges in sorted(edges_at.items()):
            row = edges[(edges["algorithm"] == algorithm) & (edges["variant"] == variant)]
            if len(row):
                n = row["frontier"].iloc[0]
                x.append(steps)
                y.append(0 if n is None or pd.isna(n) else levels.index(str(int(n))))
        offset = 0.08 * (i - (len(lines) - 1) / 2)  # lines that agree stay apart
        axis.plot(x, np.array(y) + offset, color=colour(algorithm),
                  linestyle=styles[variant], marker=MARKERS[i % len(MARKERS)], lw=1.8,
                  label=label(algorithm, variant))
    axis.set_yticks(range(len(levels)), levels)
    axis.set_ylim(-0.5, len(levels) - 0.5)
    _budget_ticks(axis, sorted(edges_at))
    axis.set_xlabel("budget (env steps per trial)")
    axis.set_ylabel("frontier N")
    axis.set_title("The frontier at each budget: the largest N up to which the final greedy\n"
                   "return stays above random and clearly above 0", fontsize=11)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, borderaxespad=0)
    return _save(figure, path)
