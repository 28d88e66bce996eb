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
    "lora": "#7b3294",
    "pretrained": "#8c8c8c",
}

LABELS = {
    # one legend label per method or arm, used by every figure
    "genept": "GenePT only",
    "selective": "+TaskPT selective",
    "random": "+TaskPT random (same count)",
    "random15": "+TaskPT random 15%",
    "finetune": "fine-tuning",
    "mask": "masking",
    "bitfit": "BitFit",
    "lora": "LoRA",
    "pretrained": "pretrained",
}


def use_style() -> None:
    """Seaborn's clean theme with readable fonts; safe to call many times."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", font_scale=1.0)
    matplotlib.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.bbox": "tight",
            "axes.titleweight": "bold",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )


def color(name: str, default: str = "#444444") -> str:
    """The colour of a method or arm in every figure (:data:`PALETTE`), else ``default``."""
    return PALETTE.get(name, default)


def label(name: str) -> str:
    """The legend label of a method or arm (:data:`LABELS`), else its name."""
    return LABELS.get(name, name)


def require_columns(df, needed, what: str, allow_empty: bool = False) -> None:
    """Raise a ValueError naming the figure (``what``) if ``df`` lacks a needed column (or, unless
    ``allow_empty``, has no rows)."""
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {list(needed)}; missing {missing} (got {list(df.columns)})")
    if df.empty and not allow_empty:
        raise ValueError(f"{what}: the table is empty")
