"""Figures for loss-landscape analysis (:mod:`tmlib.masking.landscape`).

fig = plots.landscape.paths(paths_df)                 # loss and accuracy along several paths
fig = plots.landscape.plane_contour(plane_df, coords) # 2-D contour with the three models marked
fig = plots.landscape.curve_vs_line(paths_df, line, curve)  # accuracy/loss along a line and a trained curve
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tmlib.plots import color, require_columns, use_style


def _point_color(name: str) -> str:
    return color(name, "#ffffff")


_PATH_COLORS = ["#d1495b", "#2e4057", "#8c8c8c", "#00798c", "#edae49", "#66a182"]
_SPLIT_STYLE = {"test": "-", "dev": "--"}


def paths(
    df: pd.DataFrame,
    splits: Sequence[str] | None = None,
    endpoints: Mapping[str, tuple[str, str]] | None = None,
    title: str | None = None,
) -> plt.Figure:
    """Loss (left) and accuracy (right) against gamma, one colour per path, one line style per split.

    ``df``: DataFrame(path, gamma, split, loss, accuracy). The segment [0, 1] between the two
    solutions is shaded and the endpoints are marked; ``endpoints`` maps a path to the names of its
    models at gamma = 0 and 1 (written under the markers of the first path's panel).
    """
    require_columns(df, ["path", "gamma", "split", "loss", "accuracy"], "paths figure")
    use_style()
    splits = (
        list(splits)
        if splits is not None
        else [s for s in ("dev", "test") if s in set(df.split)] or sorted(set(df.split))
    )
    names = list(dict.fromkeys(df["path"]))
    endpoints = endpoints or {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.axvspan(0, 1, color="#f2f2f2", zorder=0)
        for g in (0, 1):
            ax.axvline(g, color="#999999", lw=0.8, zorder=1)
        for i, name in enumerate(names):
            col = _PATH_COLORS[i % len(_PATH_COLORS)]
            label = f"{endpoints[name][0]} (0) \u2192 {endpoints[name][1]} (1)" if name in endpoints else name
            for split in splits:
                d = df[(df.path == name) & (df.split == split)].sort_values("gamma")
                if d.empty:
                    continue
                scale = 100 if metric == "accuracy" else 1
                ax.plot(
                    d.gamma,
                    d[metric] * scale,
                    _SPLIT_STYLE.get(split, ":"),
                    color=col,
                    lw=1.8,
                    label=f"{label}, {split}" if len(splits) > 1 else label,
                )
                ends = d[np.isclose(d.gamma, 0) | np.isclose(d.gamma, 1)]
                ax.scatter(ends.gamma, ends[metric] * scale, s=45, color=col, edgecolor="white", zorder=5)
        ax.set_xlabel(r"$\gamma$   ($\theta = (1-\gamma)\,\theta_A + \gamma\,\theta_B$)")
        ax.set_ylabel("accuracy (%)" if metric == "accuracy" else "cross-entropy loss")
        ax.set_title(metric)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(len(labels), 2),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, -0.02 - 0.035 * ((len(labels) + 1) // 2)),
    )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plane_contour(
    frame: pd.DataFrame,
    coords: Mapping[str, tuple[float, float]],
    metric: str = "accuracy",
    split: str = "dev",
    title: str | None = None,
    levels: int = 12,
) -> plt.Figure:
    """Filled contour of ``metric`` on the plane grid (rows with ``point == ''`` or no ``point``
    column), with the models at ``coords`` marked and labelled.

    ``frame``: DataFrame(alpha, beta, split, loss, accuracy[, point]) as written by
    :meth:`tmlib.masking.landscape.PlaneResult.to_frame`.
    """
    require_columns(frame, ["alpha", "beta", "split", metric], "plane contour")
    use_style()
    g = frame[frame.split == split]
    if "point" in g.columns:
        g = g[g.point.fillna("") == ""]
    if g.empty:
        raise ValueError(f"no grid rows for split {split!r}; available: {sorted(set(frame.split))}")
    table = g.pivot_table(index="beta", columns="alpha", values=metric)
    z = table.values * (100 if metric == "accuracy" else 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    cmap = "viridis" if metric == "accuracy" else "viridis_r"
    cs = ax.contourf(table.columns.values, table.index.values, z, levels=levels, cmap=cmap)
    ax.contour(table.columns.values, table.index.values, z, levels=levels, colors="white", linewidths=0.4, alpha=0.6)
    fig.colorbar(cs, ax=ax, shrink=0.8, label="accuracy (%)" if metric == "accuracy" else "cross-entropy loss")
    for name, (a, b) in coords.items():
        ax.scatter([a], [b], s=90, marker="o", color=_point_color(name), edgecolor="black", zorder=5)
        ax.annotate(
            name,
            (a, b),
            textcoords="offset points",
            xytext=(7, 7),
            fontsize=10,
            weight="bold",
            color="black",
            bbox=dict(boxstyle="round,pad=0.2", fc="white", alpha=0.8, lw=0),
        )
    ax.set_xlabel(r"$\alpha$ (along $e_1$, weight-space distance)")
    ax.set_ylabel(r"$\beta$ (along $e_2$)")
    spans = np.ptp(table.columns.values), np.ptp(table.index.values)
    if 0.2 <= spans[0] / max(spans[1], 1e-12) <= 5:  # true geometry unless one axis would be a sliver
        ax.set_aspect("equal", adjustable="box")
    ax.grid(False)
    ax.set_title(title or f"{metric} on {split}")
    fig.tight_layout()
    return fig


def curve_vs_line(
    df: pd.DataFrame, line: str, curve: str, splits: Sequence[str] | None = None, title: str | None = None
) -> plt.Figure:
    """Accuracy (left) and loss (right) along the straight line ``line`` and the trained curve ``curve``
    between the same two models, on [0, 1] (``gamma`` is the line's coefficient and the curve's t).

    ``df``: DataFrame(path, gamma, split, loss, accuracy) holding both paths (paths.csv)."""
    require_columns(df, ["path", "gamma", "split", "loss", "accuracy"], "curve-vs-line figure")
    use_style()
    missing = [p for p in (line, curve) if p not in set(df["path"])]
    if missing:
        raise ValueError(f"no rows for path(s) {missing}; available: {sorted(set(df['path']))}")
    splits = list(splits) if splits is not None else [s for s in ("dev", "test") if s in set(df.split)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0))
    styles = {line: ("straight line", "#8c8c8c"), curve: ("trained Bezier curve", "#d1495b")}
    for ax, metric in zip(axes, ("accuracy", "loss")):
        scale = 100 if metric == "accuracy" else 1
        for name, (lab, col) in styles.items():
            for split in splits:
                d = df[(df.path == name) & (df.split == split) & (df.gamma >= -1e-9) & (df.gamma <= 1 + 1e-9)]
                d = d.sort_values("gamma")
                if d.empty:
                    continue
                ax.plot(
                    d.gamma,
                    d[metric] * scale,
                    _SPLIT_STYLE.get(split, ":"),
                    color=col,
                    lw=1.8,
                    marker="o",
                    ms=3,
                    label=f"{lab}, {split}",
                )
        ax.set_xlabel(r"$\gamma$ on the line, $t$ on the curve  (0: first model, 1: second)")
        ax.set_ylabel("accuracy (%)" if metric == "accuracy" else "cross-entropy loss")
        ax.set_title(metric)
    axes[0].legend(frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
