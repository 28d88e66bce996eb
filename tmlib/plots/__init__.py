"""Figures. One module per area (``selective``, ``masking``, ``landscape``, ``importance``); this
package root holds the shared look so every figure in the suite reads the same way.

    from tmlib import plots
    plots.use_style()
    fig = plots.selective.accuracy_vs_steps(table)
"""
from __future__ import annotations

import matplotlib

PALETTE = {
    # one colour per method, used by every figure so a method looks the same everywhere
    "genept": "#8c8c8c",
    "selective": "#d1495b",
    "random": "#00798c",
    "random15": "#66a182",
    "finetune": "#2e4057",
    "mask": "#d1495b",
    "bitfit": "#edae49",
    "pretrained": "#8c8c8c",
}


def use_style() -> None:
    """Seaborn's clean theme with readable fonts; safe to call many times."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", font_scale=1.0)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titleweight": "bold",
                                "axes.spines.top": False, "axes.spines.right": False})


def color(name: str, default: str = "#444444") -> str:
    return PALETTE.get(name, default)


def require_columns(df, needed, what: str, allow_empty: bool = False) -> None:
    """Raise a ValueError naming the figure (``what``) if ``df`` lacks a needed column (or, unless
    ``allow_empty``, has no rows)."""
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {list(needed)}; missing {missing} (got {list(df.columns)})")
    if df.empty and not allow_empty:
        raise ValueError(f"{what}: the table is empty")
