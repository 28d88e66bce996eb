"""Figures of notebook 02: one panel per class, annotated agreement heatmap, clear errors."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tmlib.plots import importance as P  # noqa: E402


def table():
    rows = []
    for m in ("occlusion", "buffer"):
        for cls in ("negative", "positive", "neutral"):
            for r, w in enumerate(["bad", "dull", "fine"], start=1):
                rows.append({"method": m, "cls": cls, "word": w, "mean_score": 0.5 / r - 0.1, "count": 3 + r, "rank": r})
    return pd.DataFrame(rows)


def test_top_tokens_one_panel_per_class():
    fig = P.top_tokens(table(), method="buffer", top_k=2)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["predicted negative", "predicted neutral", "predicted positive"]
    assert all(len(ax.patches) == 2 for ax in axes)  # top_k bars per panel
    assert "buffer" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="no rows for method 'ig'"):
        P.top_tokens(table(), method="ig")
    with pytest.raises(ValueError, match="needs columns"):
        P.top_tokens(pd.DataFrame({"word": ["x"]}))
    empty = P.top_tokens(table().iloc[:0])
    assert "min_count" in empty.axes[0].texts[0].get_text()


def test_agreement_heatmap_is_annotated():
    names = ["occlusion", "grad_x_input", "buffer"]
    mat = pd.DataFrame([[1, 0.5, np.nan], [0.5, 1, -0.2], [np.nan, -0.2, 1]], index=names, columns=names)
    fig = P.agreement_heatmap(mat)
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == sorted(["1.00", "0.50", "1.00", "0.50", "-0.20", "-0.20", "1.00"])  # NaN cells unannotated
    assert [t.get_text() for t in ax.get_xticklabels()] == ["occlusion", "grad x input", "buffer (Gu et al.)"]
    with pytest.raises(ValueError, match="square"):
        P.agreement_heatmap(mat.iloc[:2])
