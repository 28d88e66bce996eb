"""Figures for selective masking (Gu et al. 2020): accuracy bars, accuracy vs TaskPT steps, compute split."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tmlib.plots import LABELS as _ALL_LABELS
from tmlib.plots import color, use_style

ARMS = ("genept", "selective", "random", "random15")  # notebook 01's arms, in legend order
LABELS = {m: _ALL_LABELS[m] for m in ARMS}


def accuracy_bars(summary: pd.DataFrame, title: str = "Test accuracy (mean ± std over seeds)"):
    """Grouped bars: one group per GenePT budget, one bar per condition, error bars = std over seeds."""
    use_style()
    budgets = sorted(summary["genept_steps"].unique())
    methods = [m for m in LABELS if m in set(summary["method"])]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(budgets) * len(methods) / 2, 3.6))
    width = 0.8 / len(methods)
    x = np.arange(len(budgets))
    for k, m in enumerate(methods):
        rows = summary[summary["method"] == m].set_index("genept_steps").reindex(budgets)
        mean, std = 100 * rows["test_mean"].to_numpy(), 100 * rows["test_std"].fillna(0).to_numpy()
        bars = ax.bar(
            x + (k - (len(methods) - 1) / 2) * width, mean, width, yerr=std, capsize=3, color=color(m), label=LABELS[m]
        )
        for b, v, sd in zip(bars, mean, std):
            if np.isfinite(v):  # above the error bar, not on it
                ax.annotate(
                    f"{v:.1f}",
                    (b.get_x() + b.get_width() / 2, v + sd),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 3),
                    textcoords="offset points",
                )
    ax.set_xticks(x, [f"GenePT {b} steps" for b in budgets])
    lo = np.nanmin(100 * summary["test_mean"]) - 3 * max(1.0, np.nanmax(100 * summary["test_std"].fillna(0)))
    ax.set_ylim(max(0, lo), min(100, np.nanmax(100 * (summary["test_mean"] + summary["test_std"].fillna(0))) + 4))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.95)
    return fig


def accuracy_vs_steps(steps_summary: pd.DataFrame, title: str = "Accuracy vs TaskPT steps"):
    """Mean ± std bands per method; step 0 is the GenePT-only model shared by every method."""
    use_style()
    budgets = sorted(steps_summary["genept_steps"].unique())
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.6 * len(budgets), 3.4), squeeze=False, sharey=True)
    for ax, g in zip(axes[0], budgets):
        d = steps_summary[steps_summary["genept_steps"] == g]
        for m in [m for m in LABELS if m in set(d["method"])]:
            r = d[d["method"] == m].sort_values("taskpt_steps")
            mean, std = 100 * r["test_mean"].to_numpy(), 100 * r["test_std"].fillna(0).to_numpy()
            ax.plot(r["taskpt_steps"], mean, marker="o", color=color(m), label=LABELS[m])
            ax.fill_between(r["taskpt_steps"], mean - std, mean + std, color=color(m), alpha=0.18)
        ax.set_xlabel("TaskPT steps")
        ax.set_title(f"GenePT {g} steps")
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def compute_split(compute: dict, method: str = "selective", budget: int | None = None, key: str = "seconds"):
    """Pie of one selective run's compute (GenePT at ``budget`` / importance pipeline / TaskPT) next to a
    bar per stage; ``key`` is ``seconds`` (measured) or ``flops`` (estimated from token counts)."""
    use_style()
    df = pd.DataFrame(compute["stages"])
    gen = df[df["group"] == "GenePT"]
    budget = budget if budget is not None else int(gen["steps"].min())
    genept = float(gen.loc[gen["steps"] == budget, key].sum())
    imp = float(df.loc[df["group"] == "importance", key].sum())
    tp = df[(df["group"] == "TaskPT") & (df["method"] == method) & (df["genept_steps"] == budget)]
    taskpt = float(tp[key].sum())
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 1.5]})
    parts = [
        ("GenePT", genept, color("genept")),
        ("importance pipeline", imp, "#edae49"),
        (f"TaskPT ({method})", taskpt, color(method)),
    ]
    vals = [max(v, 0.0) for _, v, _ in parts]
    if sum(vals) > 0:
        a1.pie(
            vals,
            labels=[n for n, _, _ in parts],
            colors=[c for _, _, c in parts],
            autopct="%1.0f%%",
            startangle=90,
            wedgeprops={"linewidth": 1, "edgecolor": "white"},
        )
    a1.set_title(f"compute split ({key}), GenePT {budget}")
    stages = df[df["group"] != "fine-tune"]
    a2.barh(
        stages["stage"],
        stages[key],
        color=[
            {"GenePT": color("genept"), "importance": "#edae49"}.get(g, color(m) if isinstance(m, str) else "#444")
            for g, m in zip(stages["group"], stages.get("method", [None] * len(stages)))
        ],
    )
    a2.invert_yaxis()
    a2.set_xlabel(key)
    a2.set_title("per stage")
    a2.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def training_curves(genept_history: pd.DataFrame, taskpt_history: pd.DataFrame | None = None):
    """MLM training loss of GenePT (and of each TaskPT run). GenePT loaded from checkpoints (the `paper` sets'
    MultiBERTs) has no history: its panel says so."""
    use_style()
    n = 1 if taskpt_history is None or taskpt_history.empty else 2
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.2), squeeze=False)
    if genept_history is None or genept_history.empty or "step" not in genept_history:
        axes[0][0].text(
            0.5,
            0.5,
            "GenePT not trained here\n(loaded from checkpoints)",
            ha="center",
            va="center",
            transform=axes[0][0].transAxes,
        )
        axes[0][0].set_xticks([])
        axes[0][0].set_yticks([])
    else:
        axes[0][0].plot(genept_history["step"], genept_history["train_loss"], color=color("genept"))
    axes[0][0].set_title("GenePT MLM loss")
    axes[0][0].set_xlabel("step")
    if n == 2:
        ax = axes[0][1]
        for (g, m), d in taskpt_history.groupby(["genept_steps", "method"]):
            ax.plot(
                d["step"],
                d["train_loss"],
                color=color(m),
                ls="-" if g == taskpt_history["genept_steps"].min() else "--",
                label=f"{m} (GenePT {g})",
            )
        ax.set_title("TaskPT MLM loss (on its own masks)")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def probe_bars(probe: pd.DataFrame, title: str = "Can the MLM head fill a blank? Held-out top-1 at masked positions"):
    """Top-1 (%) per checkpoint, general vs in-domain held-out sentences; the 30% line is the target a
    TaskPT start should reach."""
    from tmlib.plots import require_columns

    require_columns(probe, ["stage", "genept_steps", "method", "domain", "top1"], "probe_bars")
    use_style()
    p = probe.assign(
        label=[
            f"GenePT {g}" if s == "genept" else f"GenePT {g}\n+TaskPT {m}"
            for s, g, m in zip(probe["stage"], probe["genept_steps"], probe["method"])
        ]
    )
    labels = list(dict.fromkeys(p["label"]))
    domains = list(dict.fromkeys(p["domain"]))
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(labels), 3.4))
    width = 0.8 / len(domains)
    x = np.arange(len(labels))
    for k, dom in enumerate(domains):
        v = 100 * p[p["domain"] == dom].set_index("label").reindex(labels)["top1"].to_numpy()
        bars = ax.bar(
            x + (k - (len(domains) - 1) / 2) * width, v, width, label=dom, color=["#2e4057", "#d1495b"][k % 2]
        )
        for b, val in zip(bars, v):
            if np.isfinite(val):
                ax.annotate(
                    f"{val:.0f}",
                    (b.get_x() + b.get_width() / 2, val),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
    ax.axhline(30, color="#444444", lw=0.8, ls="--")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("held-out top-1 (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def paired_gap_plot(
    results: pd.DataFrame, gaps: pd.DataFrame, title: str = "Paired gaps (test accuracy points, one dot per seed)"
):
    """Per GenePT budget and comparison: one dot per fine-tuning seed, the mean and its 95% CI
    (``gaps``: :func:`tmlib.experiments.selective.paired_gaps` of ``results``)."""
    use_style()
    final = results[results["final"]] if "final" in results else results
    comps = list(dict.fromkeys(gaps["comparison"]))
    budgets = sorted(gaps["genept_steps"].unique())
    fig, axes = plt.subplots(
        1, len(budgets), figsize=(3.2 + 1.3 * len(comps) * len(budgets), 3.4), squeeze=False, sharey=True
    )
    for ax, g in zip(axes[0], budgets):
        acc = final[final["genept_steps"] == g].pivot_table(index="seed", columns="method", values="test_accuracy")
        notes = []
        for i, comp in enumerate(comps):
            a, b = comp.split(" - ")
            if a not in acc or b not in acc:
                continue
            d = (100 * (acc[a] - acc[b])).dropna()
            ax.scatter(np.full(len(d), i) + np.linspace(-0.12, 0.12, len(d)), d, s=14, color=color(a), alpha=0.7)
            row = gaps[(gaps["genept_steps"] == g) & (gaps["comparison"] == comp)].iloc[0]
            ax.errorbar(
                i + 0.25,
                row["gap_mean"],
                yerr=row["ci95"] if np.isfinite(row["ci95"]) else 0,
                fmt="D",
                color="black",
                capsize=4,
                ms=5,
            )
            notes.append((i, f"p={row['p']:.2g}"))
        top = ax.get_ylim()[1]
        ax.set_ylim(ax.get_ylim()[0], top + 0.12 * (top - ax.get_ylim()[0]))  # room for the p values above the data
        for i, text in notes:
            ax.annotate(text, (i, ax.get_ylim()[1]), ha="center", va="top", fontsize=7)
        ax.axhline(0, color="#444444", lw=0.8)
        ax.set_xticks(range(len(comps)), comps, fontsize=7, rotation=15)
        ax.set_title(f"GenePT {g} steps", fontsize=9)
    axes[0][0].set_ylabel("gap (points)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def budget_curve(gaps: pd.DataFrame, title: str = "Does the gap open as TaskPT grows?"):
    """The budget curve (``gaps``: :func:`tmlib.experiments.selective.budget_gaps`): per primary comparison, the
    mean paired gap ± its 95% CI against TaskPT steps (passes over the corpus on the top axis), the band of gaps
    the design could not have detected (± the detectable gap) shaded, p and Holm-adjusted p beside each point."""
    use_style()
    rows = gaps[gaps["primary"]].sort_values("taskpt_budget") if "primary" in gaps else gaps.iloc[0:0]
    if rows.empty:
        raise ValueError("budget curve: no primary rows in the gaps table (run with taskpt.budgets set)")
    comps = list(dict.fromkeys(rows["comparison"]))
    fig, axes = plt.subplots(1, len(comps), figsize=(5.0 * len(comps), 3.8), squeeze=False, sharey=True)
    names = {
        "selective": "selective",
        "random": "random (same count)",
        "random15": "random 15%",
        "genept": "GenePT only",
    }
    for ax, comp in zip(axes[0], comps):
        numbers = ["gap_mean", "ci95", "p", "p_holm", "detectable_gap"]
        r = rows[rows["comparison"] == comp].astype({c: float for c in numbers})
        steps = r["taskpt_budget"].to_numpy()
        ax.fill_between(steps, -r["detectable_gap"], r["detectable_gap"], color="#dddddd", label="not detectable")
        ax.errorbar(steps, r["gap_mean"], yerr=r["ci95"].fillna(0), fmt="o-", color=color(comp.split(" - ")[0]),
                    capsize=4, label="mean ± 95% CI")  # fmt: skip
        for x, y, p, ph in zip(steps, r["gap_mean"], r["p"], r["p_holm"]):
            ax.annotate(f"p={p:.2g}\nHolm {ph:.2g}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=7)
        ax.axhline(0, color="#444444", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(steps, [str(s) for s in steps])
        ax.minorticks_off()
        ax.set_xlabel("TaskPT steps (each its own run)")
        if "taskpt_passes" in r:
            top = ax.secondary_xaxis("top")
            top.set_xticks(steps, [f"{p:g}" for p in r["taskpt_passes"]])
            top.minorticks_off()
            top.set_xlabel("passes over the corpus", fontsize=8)
        a, b = comp.split(" - ")
        ax.set_title(f"{names.get(a, a)} − {names.get(b, b)}, {int(r['n_seeds'].min())} seeds", fontsize=9)
    axes[0][0].set_ylabel("test accuracy gap (points)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
