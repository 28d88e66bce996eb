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
    assert len(loss_ax.get_lines()) >= 4  # 2 paths x 2 splits (+ endpoint guides)
    assert max(max(line.get_ydata()) for line in acc_ax.get_lines() if len(line.get_ydata()) > 2) <= 100
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
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert set(coords) <= set(texts)
    P.plane_contour(grid, coords, metric="loss")
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
