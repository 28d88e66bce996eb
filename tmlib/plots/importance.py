"""Figures for token importance (notebook 02): top words per class, agreement between methods."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tmlib.plots import use_style

METHOD_LABELS = {
    "occlusion": "occlusion",
    "grad_x_input": "grad x input",
    "integrated_gradients": "integrated gradients",
    "buffer": "buffer (Gu et al.)",
}
CLASS_COLORS = ["#2166ac", "#b2182b", "#1b7837", "#762a83", "#e08214", "#4d4d4d"]


def top_tokens(table: pd.DataFrame, method: str | None = None, top_k: int | None = None):
    """Horizontal bars of the top words per class (one panel per class) for one method.

    ``table``: :func:`tmlib.experiments.explorer.top_tokens` output (method, cls, word, mean_score,
    count, rank). ``method``: which method's ranking (default: the first in the table).
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    use_style()
    need = {"method", "cls", "word", "mean_score", "count", "rank"}
    if not need.issubset(table.columns):
        raise ValueError(f"table needs columns {sorted(need)}; got {list(table.columns)}")
    if table.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no word reached min_count: score more examples or lower min_count", ha="center")
        return fig
    method = method or table["method"].iloc[0]
    sub = table[table["method"] == method]
    if sub.empty:
        raise ValueError(f"no rows for method {method!r}; the table has {sorted(table['method'].unique())}")
    if top_k:
        sub = sub[sub["rank"] <= top_k]
    classes = list(dict.fromkeys(sub.sort_values("cls")["cls"]))
    k = int(sub["rank"].max())
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 0.32 * k + 1.4), squeeze=False)
    for j, (ax, cls) in enumerate(zip(axes[0], classes)):
        rows = sub[sub["cls"] == cls].sort_values("rank", ascending=False)
        ax.barh(rows["word"], rows["mean_score"], color=CLASS_COLORS[j % len(CLASS_COLORS)], alpha=0.85)
        for y, (v, c) in enumerate(zip(rows["mean_score"], rows["count"])):
            ax.text(max(v, 0.0), y, f" n={c}", va="center", fontsize=7.5, color="#555")
        ax.axvline(0, color="#888", lw=0.8)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.2g}"))
        ax.set_title(f"predicted {cls}")
        ax.set_xlabel("mean importance per occurrence")
        ax.tick_params(axis="y", labelsize=9)
        ax.margins(x=0.18)
    fig.suptitle(f"Most important words per class: {METHOD_LABELS.get(method, method)}", fontweight="bold")
    fig.tight_layout()
    return fig


def agreement_heatmap(matrix: pd.DataFrame, title: str = "Agreement between importance methods"):
    """Annotated heatmap of mean per-text Spearman correlations (methods x methods)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    if matrix.shape[0] != matrix.shape[1] or list(matrix.index) != list(matrix.columns):
        raise ValueError(
            "matrix must be square with the same methods as rows and columns "
            "(tmlib.importance.attribution.method_agreement output)"
        )
    labels = [METHOD_LABELS.get(m, m) for m in matrix.index]
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.5 * n + 2.2, 1.2 * n + 1.2))
    values = matrix.to_numpy(dtype=float)
    sns.heatmap(
        values,
        annot=np.where(np.isnan(values), np.nan, values),
        fmt=".2f",
        cmap="RdBu_r",
        vmin=-1,
        vmax=1,
        square=True,
        linewidths=0.5,
        xticklabels=labels,
        yticklabels=labels,
        ax=ax,
        cbar_kws={"label": "mean Spearman rho per text"},
    )
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    ax.tick_params(axis="y", rotation=0)
    for t in ax.get_xticklabels():
        t.set_ha("right")
    fig.tight_layout()
    return fig
