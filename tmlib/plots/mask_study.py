"""Figures for notebook 05 (what learned masks learn, :mod:`tmlib.experiments.mask_study`).

fig = plots.mask_study.setting_bars(table, "initial sparsity")   # test accuracy and density per setting
fig = plots.mask_study.probe_bars(probe)                        # linear-probe accuracy per representation
fig = plots.mask_study.tsne_panels(frame)                       # t-SNE of [CLS] vectors, one panel each
fig = plots.mask_study.transfer_bars(transfer)                  # accuracy on other datasets, mask vs ft
fig = plots.mask_study.token_bars(token_table)                  # token tasks: test metric per method
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tmlib.plots import color, label, require_columns, use_style


def setting_bars(table: pd.DataFrame, xlabel: str) -> plt.Figure:
    """Test accuracy (mean ± sd over seeds) per setting, with the final density on a second axis."""
    require_columns(table, ["setting", "test_mean", "test_std", "density_pct"], "setting_bars")
    use_style()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    x = np.arange(len(table))
    ax.bar(
        x,
        table["test_mean"],
        yerr=table["test_std"].fillna(0),
        capsize=3,
        color=color("mask"),
        alpha=0.85,
        label="test accuracy",
    )
    ax.set_xticks(x, table["setting"].astype(str))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    lo = float((table["test_mean"] - table["test_std"].fillna(0)).min())
    ax.set_ylim(max(0.0, lo - 5), min(100.0, float(table["test_mean"].max()) + 5))
    ax2 = ax.twinx()
    ax2.plot(x, table["density_pct"], "o-", color="#2e4057", label="weights kept (%)")
    ax2.set_ylabel("weights kept after training (%)")
    ax2.grid(False)
    fig.legend(loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.08), frameon=False)
    fig.tight_layout()
    return fig


def probe_bars(probe: pd.DataFrame) -> plt.Figure:
    """Linear-probe accuracy (mean ± sd over folds) of every representation, grouped by model."""
    require_columns(probe, ["representation", "model", "probe_accuracy", "probe_sd"], "probe_bars")
    use_style()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    x = np.arange(len(probe))
    ax.bar(
        x,
        probe["probe_accuracy"],
        yerr=probe["probe_sd"],
        capsize=3,
        color=[color(m, "#8c8c8c") for m in probe["model"]],
    )
    ax.set_xticks(x, probe["representation"], rotation=20)
    ax.set_ylabel("linear-probe accuracy (%)")
    lo = float(probe["probe_accuracy"].min())
    ax.set_ylim(max(0.0, lo - 10), 100)
    ax.set_title("What a linear classifier reads off the frozen [CLS] vector")
    fig.tight_layout()
    return fig


def tsne_panels(frame: pd.DataFrame) -> plt.Figure:
    """One t-SNE panel per representation, points coloured by gold class."""
    require_columns(frame, ["representation", "x", "y", "label"], "tsne_panels")
    use_style()
    names = list(dict.fromkeys(frame["representation"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.4), squeeze=False)
    palette = ["#2166ac", "#b2182b", "#1b7837", "#762a83", "#e08214"]
    for ax, name in zip(axes[0], names):
        d = frame[frame.representation == name]
        for k, lab in enumerate(sorted(d["label"].unique())):
            s = d[d.label == lab]
            ax.scatter(s["x"], s["y"], s=6, alpha=0.7, color=palette[k % len(palette)], label=f"class {lab}")
        ax.set_title(label(name.split("-s")[0]) + ("" if "-s" not in name else f" (seed {name.split('-s')[1]})"))
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def transfer_bars(transfer: pd.DataFrame) -> plt.Figure:
    """Accuracy (mean ± sd over seeds) of the masked and the fine-tuned models on each transfer task."""
    require_columns(transfer, ["task", "method", "seed", "accuracy"], "transfer_bars")
    use_style()
    g = transfer.groupby(["task", "method"], sort=False)["accuracy"].agg(["mean", "std"]).reset_index()
    tasks = list(dict.fromkeys(g["task"]))
    methods = list(dict.fromkeys(g["method"]))
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    width = 0.8 / max(1, len(methods))
    for k, m in enumerate(methods):
        d = g[g.method == m].set_index("task").reindex(tasks)
        ax.bar(
            np.arange(len(tasks)) + (k - (len(methods) - 1) / 2) * width,
            100 * d["mean"],
            width,
            yerr=100 * d["std"].fillna(0),
            capsize=3,
            color=color(m),
            label=label(m),
        )
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylabel("accuracy on the other dataset (%)")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def token_bars(table: pd.DataFrame) -> plt.Figure:
    """Test metric (mean ± sd over seeds, %) of every method on each token task, from
    :func:`tmlib.experiments.mask_study.token_table`; the task's metric is named under it (accuracy, f1)."""
    require_columns(table, ["task", "method", "metric", "mean", "std"], "token_bars")
    use_style()
    tasks = list(dict.fromkeys(table["task"]))
    methods = list(dict.fromkeys(table["method"]))
    fig, ax = plt.subplots(figsize=(6.4 if len(tasks) < 3 else 3.2 * len(tasks), 3.4))
    width = 0.8 / max(1, len(methods))
    for k, m in enumerate(methods):
        d = table[table.method == m].set_index("task").reindex(tasks)
        ax.bar(
            np.arange(len(tasks)) + (k - (len(methods) - 1) / 2) * width,
            d["mean"],
            width,
            yerr=d["std"].fillna(0),
            capsize=3,
            color=color(m),
            label=label(m),
        )
    metric = table.drop_duplicates("task").set_index("task")["metric"]
    ax.set_xticks(np.arange(len(tasks)), [f"{t}\n({metric[t]})" for t in tasks])
    ax.set_ylabel("test score on held-out sentences (%)")
    ax.set_ylim(0, 100)
    ax.legend(frameon=False, ncol=min(4, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.22))
    fig.tight_layout()
    return fig
