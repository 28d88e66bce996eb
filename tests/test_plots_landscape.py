"""tmlib.plots.landscape: figures from the experiment's tables; clear errors on wrong tables."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from tmlib.plots import landscape as P


def paths_df():
    g = np.round(np.linspace(-0.2, 1.2, 8), 3)
    rows = [
        {"path": p, "gamma": x, "split": s, "loss": 0.5 + (x - 0.5) ** 2, "accuracy": 0.8 - 0.1 * (x - 0.5) ** 2}
        for p in ("mask<->finetune", "pretrained<->finetune")
        for s in ("dev", "test")
        for x in [*g, 0.0, 1.0]
    ]
    return pd.DataFrame(rows)


def test_paths_figure():
    fig = P.paths(paths_df(), endpoints={"mask<->finetune": ("mask", "finetune")}, title="t")
    loss_ax, acc_ax = fig.axes[:2]
    df = paths_df()
    order = [(p, s) for p in ("mask<->finetune", "pretrained<->finetune") for s in ("dev", "test")]
    for ax, metric, scale in ((loss_ax, "loss", 1), (acc_ax, "accuracy", 100)):
        drawn = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]  # not the gamma = 0, 1 guides
        assert [line.get_label() for line in drawn] == [
            "mask (0) \u2192 finetune (1), dev",
            "mask (0) \u2192 finetune (1), test",
            "pretrained<->finetune, dev",
            "pretrained<->finetune, test",
        ]
        for line, (p, s) in zip(drawn, order):  # each line: its own path and split's rows, sorted by gamma
            d = df[(df.path == p) & (df.split == s)].sort_values("gamma", kind="stable")
            assert list(line.get_xdata()) == pytest.approx(list(d.gamma))
            assert list(line.get_ydata()) == pytest.approx(list(d[metric] * scale)), (metric, p, s)
    with pytest.raises(ValueError, match="missing \\['path'\\]"):
        P.paths(paths_df().drop(columns="path"))


def test_plane_contour():
    a, b = np.meshgrid(np.linspace(-1, 3, 4), np.linspace(-1, 2, 3))
    grid = pd.DataFrame(
        {
            "point": "",
            "alpha": a.ravel(),
            "beta": b.ravel(),
            "split": "dev",
            "loss": (a**2 + b**2).ravel(),
            "accuracy": 1 / (1 + a.ravel() ** 2),
        }
    )
    coords = {"pretrained": (0.0, 0.0), "mask": (2.0, 0.0), "finetune": (0.5, 1.0)}
    fig = P.plane_contour(grid, coords, metric="accuracy")
    # each model's label sits at its own coordinates
    assert {t.get_text(): tuple(t.xy) for t in fig.axes[0].texts} == coords
    # the colour scale spans the grid's values: accuracy in percent (here 10% .. 90%), loss as it is (0.36 .. 13)
    for metric, lo, hi in (("accuracy", 100 * grid.accuracy.min(), 100 * grid.accuracy.max()), ("loss", 0.36, 13.0)):
        f = P.plane_contour(grid, coords, metric=metric)
        low, high = sorted(f.axes[1].get_ylim())  # the colorbar
        assert low <= lo + 1e-9 and hi - 1e-9 <= high < hi + (hi - lo) / 5, (metric, low, high)
    with pytest.raises(ValueError, match="no grid rows for split 'test'"):
        P.plane_contour(grid, coords, split="test")


def test_curve_vs_line():
    df = paths_df()
    curve = df[df.path == "mask<->finetune"].assign(path="curve", accuracy=0.9)
    both = pd.concat([df, curve[(curve.gamma >= 0) & (curve.gamma <= 1)]])
    fig = P.curve_vs_line(both, line="mask<->finetune", curve="curve", title="t")
    acc_ax, loss_ax = fig.axes[:2]
    assert acc_ax.get_ylabel() == "accuracy (%)" and loss_ax.get_ylabel() == "cross-entropy loss"
    labels = [line.get_label() for line in acc_ax.get_lines()]
    assert labels == [
        "straight line, dev",
        "straight line, test",
        "trained Bezier curve, dev",
        "trained Bezier curve, test",
    ]
    assert all(0 <= x <= 1 for line in acc_ax.get_lines() for x in line.get_xdata())  # only [0, 1]
    assert list(acc_ax.get_lines()[-1].get_ydata()) == pytest.approx([90.0] * len(acc_ax.get_lines()[-1].get_ydata()))
    with pytest.raises(ValueError, match="no rows for path"):
        P.curve_vs_line(df, line="mask<->finetune", curve="curve")
