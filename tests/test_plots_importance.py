"""Figures of notebook 02: one panel per class, annotated agreement heatmap, clear errors."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from tmlib.plots import importance as P


def table():
    rows = []
    for m in ("occlusion", "buffer"):
        for cls in ("negative", "positive", "neutral"):
            for r, w in enumerate(["bad", "dull", "fine"], start=1):
                scale = 2.0 if m == "buffer" else 1.0  # the methods differ: a panel shows its method's numbers
                rows.append(
                    {
                        "method": m,
                        "cls": cls,
                        "word": w,
                        "mean_score": scale * (0.5 / r - 0.1),
                        "count": 3 + r,
                        "rank": r,
                    }
                )
    return pd.DataFrame(rows)


def test_top_tokens_one_panel_per_class():
    fig = P.top_tokens(table(), method="buffer", top_k=2)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["predicted negative", "predicted neutral", "predicted positive"]
    assert all(len(ax.patches) == 2 for ax in axes)  # top_k bars per panel
    for ax in axes:  # rank 1 on top: the buffer method's mean scores, the words on the y axis, counts beside
        assert [round(p.get_width(), 6) for p in ax.patches] == [0.3, 0.8]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["dull", "bad"]
        assert [t.get_text() for t in ax.texts] == [" n=5", " n=4"]
        assert ax.get_xlabel() == "mean importance per occurrence"
    occ = [ax for ax in P.top_tokens(table(), method="occlusion").axes if ax.get_title()][0]
    assert [round(p.get_width(), 4) for p in occ.patches] == [0.0667, 0.15, 0.4]  # all 3 ranks without top_k
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
    cells = ax.collections[0].get_array()  # the colour of each cell is the matrix value, NaN cells masked
    assert np.allclose(np.ma.filled(cells, np.nan).reshape(3, 3), mat.to_numpy(), equal_nan=True)
    assert fig.axes[1].get_ylabel() == "mean Spearman rho per text"  # the colour bar names the statistic
    with pytest.raises(ValueError, match="square"):
        P.agreement_heatmap(mat.iloc[:2])
