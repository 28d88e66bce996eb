"""Figures for notebook 03 (learned masks vs fine-tuning, :mod:`tmlib.experiments.masking`).

fig = plots.masking.accuracy_bars(results)     # grouped bars, mean +- std over seeds
fig = plots.masking.sparsity_heatmap(sparsity) # % kept per block x module type, one panel per task
fig = plots.masking.storage_bars(storage)      # task-specific bytes, log scale
fig = plots.masking.memory_lines(memory)       # bytes to serve N tasks at once
fig = plots.masking.dev_curves(curves)         # dev accuracy vs step per method (mean + each seed)
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tmlib.plots import color, label, require_columns, use_style

TYPE_ORDER = ["query", "key", "value", "attn_out", "ffn_in", "ffn_out", "pooler", "head"]


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def accuracy_bars(results: pd.DataFrame, split: str = "test") -> plt.Figure:
    """Grouped bars: one group per task, one bar per method, mean accuracy (%) over seeds with std error bars.
    ``results``: one row per run with task, method, seed and ``<split>_accuracy`` (0..1)."""
    col = f"{split}_accuracy"
    require_columns(results, ["task", "method", col], "accuracy figure")
    use_style()
    tasks = list(dict.fromkeys(results["task"]))
    methods = list(dict.fromkeys(results["method"]))
    stats = results.groupby(["task", "method"])[col].agg(["mean", "std", "count"]).fillna({"std": 0.0})
    fig, ax = plt.subplots(figsize=(1.6 + 2.2 * len(tasks), 3.8))
    width = 0.8 / len(methods)
    x = np.arange(len(tasks))
    lo = 100.0
    for j, m in enumerate(methods):
        mean = np.array([100 * stats.loc[(t, m), "mean"] if (t, m) in stats.index else np.nan for t in tasks])
        std = np.array([100 * stats.loc[(t, m), "std"] if (t, m) in stats.index else 0.0 for t in tasks])
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(pos, mean, width * 0.92, yerr=std, capsize=3, color=color(m), label=label(m))
        for p, v in zip(pos, mean):
            if np.isfinite(v):
                ax.text(p, v + 0.4, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        lo = min(lo, np.nanmin(mean - std))
    ax.set_xticks(x, tasks)
    ax.set_ylim(max(0.0, lo - 8), 100)
    ax.set_ylabel(f"{split} accuracy (%)")
    n = int(stats["count"].max())
    ax.set_title(f"{split.capitalize()} accuracy, mean ± std over {n} seed{'s' if n > 1 else ''}")
    ax.legend(frameon=False, ncols=len(methods), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return fig


def sparsity_heatmap(sparsity: pd.DataFrame) -> plt.Figure:
    """% of weights kept per encoder block (rows) and module type (columns), one panel per task.
    The pooler and head (block -1) form the bottom row."""
    require_columns(sparsity, ["task", "block", "type", "kept_pct"], "sparsity heatmap")
    use_style()
    tasks = list(dict.fromkeys(sparsity["task"]))
    types = [t for t in TYPE_ORDER if t in set(sparsity["type"])] + sorted(set(sparsity["type"]) - set(TYPE_ORDER))
    fig, axes = plt.subplots(
        1,
        len(tasks),
        figsize=(0.9 * len(types) * len(tasks) + 2.5, 0.5 * sparsity["block"].nunique() + 2.2),
        squeeze=False,
        layout="constrained",
    )
    vmin, vmax = sparsity["kept_pct"].min(), sparsity["kept_pct"].max()
    for ax, task in zip(axes[0], tasks):
        df = sparsity[sparsity["task"] == task]
        blocks = sorted(b for b in set(df["block"]) if b >= 0) + ([-1] if (df["block"] < 0).any() else [])
        grid = df.pivot_table(index="block", columns="type", values="kept_pct").reindex(index=blocks, columns=types)
        im = ax.imshow(grid.values, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for (r, c), v in np.ndenumerate(grid.values):
            if np.isfinite(v):
                ax.text(
                    c,
                    r,
                    f"{v:.1f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v < (vmin + vmax) / 2 else "black",
                )
        ax.set_xticks(range(len(types)), types, rotation=45, ha="right")
        ax.set_yticks(range(len(blocks)), [f"block {b}" if b >= 0 else "pooler/head" for b in blocks])
        ax.set_title(task)
        ax.grid(False)
    fig.colorbar(im, ax=axes[0].tolist(), label="% of weights kept", shrink=0.85)
    fig.suptitle("Learned masks: share of pretrained weights kept", fontweight="bold")
    return fig


def storage_bars(storage: pd.DataFrame) -> plt.Figure:
    """Task-specific bytes per method (log scale), with the full fp32 copy as reference line."""
    require_columns(storage, ["task", "method", "task_bytes", "fp32_copy_bytes"], "storage figure")
    use_style()
    tasks = list(dict.fromkeys(storage["task"]))
    methods = list(dict.fromkeys(storage["method"]))
    fig, ax = plt.subplots(figsize=(1.6 + 2.2 * len(tasks), 3.8))
    width = 0.8 / len(methods)
    x = np.arange(len(tasks))
    for j, m in enumerate(methods):
        vals = [storage[(storage.task == t) & (storage.method == m)]["task_bytes"].sum() for t in tasks]
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(pos, vals, width * 0.92, color=color(m), label=label(m))
        for p, v in zip(pos, vals):
            ax.text(p, v * 1.15, _human(v), ha="center", va="bottom", fontsize=7, rotation=90)
    ax.axhline(storage["fp32_copy_bytes"].max(), color="#444444", ls="--", lw=1, label="fp32 copy of the model")
    ax.set_yscale("log")
    ax.set_xticks(x, tasks)
    ax.set_ylabel("bytes per task (log)")
    ax.set_ylim(top=storage["fp32_copy_bytes"].max() * 20)
    ax.set_title("Per-task storage")
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=2)
    return fig


def memory_lines(memory: pd.DataFrame) -> plt.Figure:
    """Bytes held in memory to serve N tasks at once, one line per method; measured points marked."""
    require_columns(memory, ["method", "n_tasks", "bytes", "kind"], "memory figure")
    use_style()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    proj = memory[memory["kind"] == "projected"]
    for m in dict.fromkeys(proj["method"]):
        d = proj[proj["method"] == m].sort_values("n_tasks")
        ax.plot(d["n_tasks"], d["bytes"] / 2**20, marker="o", ms=3, color=color(m), label=label(m))
    meas = memory[memory["kind"] == "measured"]
    if not meas.empty:
        ax.scatter(
            meas["n_tasks"],
            meas["bytes"] / 2**20,
            s=90,
            facecolors="none",
            edgecolors="black",
            zorder=5,
            label="measured (multi-task model)",
        )
    ax.set_xlabel("tasks served at once")
    ax.set_ylabel("memory (MiB)")
    ax.set_title("Serving N tasks from one process")
    ax.legend(frameon=False, fontsize=8)
    return fig


def flips_lines(flips: pd.DataFrame) -> plt.Figure:
    """% of weights kept and % of mask bits flipped per record interval during mask training, one line per
    task and seed (``flips``: step, kept_pct, flip_pct, optional task and seed columns)."""
    require_columns(flips, ["step", "kept_pct", "flip_pct"], "mask-flip figure", allow_empty=True)
    use_style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    if flips.empty:
        for ax in axes:
            ax.text(
                0.5,
                0.5,
                "no records: training was shorter than flip_every steps",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=9,
            )
    df = flips.assign(task=flips.get("task", ""), seed=flips.get("seed", 0))
    for (task, seed), d in df.groupby(["task", "seed"], sort=False):
        axes[0].plot(d["step"], d["kept_pct"], label=f"{task} s{seed}")
        axes[1].plot(d["step"], d["flip_pct"].clip(lower=1e-4), label=f"{task} s{seed}")
    axes[0].set(xlabel="step", ylabel="% weights kept", title="Mask density during training")
    axes[1].set(xlabel="step", ylabel="% bits flipped since last record", title="Mask flips")
    if not flips.empty:
        axes[1].set_yscale("log")
        axes[0].legend(frameon=False, fontsize=8)
    return fig


def dev_curves(curves: pd.DataFrame, metric: str = "dev_accuracy") -> plt.Figure:
    """Dev accuracy (%) against the training step, one panel per task, one colour per method: the mean over
    seeds (line) and every seed (thin lines). ``curves``: task, method, seed, step, ``metric`` (0..1)."""
    require_columns(curves, ["task", "method", "seed", "step", metric], "dev-curve figure")
    use_style()
    tasks = list(dict.fromkeys(curves["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        d = curves[curves["task"] == task]
        for m in dict.fromkeys(d["method"]):
            dm = d[d["method"] == m]
            for _, ds in dm.groupby("seed"):
                ds = ds.sort_values("step")
                ax.plot(ds["step"], 100 * ds[metric], color=color(m), lw=0.6, alpha=0.35)
            mean = dm.groupby("step")[metric].mean()
            lr = dm["lr"].iloc[0] if "lr" in dm and pd.notna(dm["lr"].iloc[0]) else None
            ax.plot(
                mean.index,
                100 * mean.values,
                color=color(m),
                lw=2,
                marker="o",
                ms=3,
                label=f"{label(m)}" + (f" (lr {lr:g})" if lr is not None else ""),
            )
        ax.set(xlabel="training step", ylabel="dev accuracy (%)", title=task)
        ax.legend(frameon=False, fontsize=8)
    n = int(curves.groupby(["task", "method"])["seed"].nunique().max()) if len(curves) else 0
    fig.suptitle(f"Dev accuracy during training (thin: each of {n} seeds; thick: mean)")
    fig.tight_layout()
    return fig
