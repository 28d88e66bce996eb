"""Smoke run of notebook 02 through the suite runner (papermill): every output file is written and sane."""
import json

import pandas as pd
import pytest

from tmlib.suite import run_suite


@pytest.mark.slow
def test_notebook_02_smoke(tmp_path):
    rows = run_suite("smoke", tmp_path, only=["02"])
    # budget: < 1.5 min on 2 free cores; the bound is loose because CI machines are shared
    assert rows[0]["notebook"] == "02_token_importance_explorer.ipynb"
    out = tmp_path / "02_token_importance_explorer"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.count('<div class="ex') == 12 * 4
    for m in ("occlusion", "grad_x_input", "integrated_gradients", "buffer"):
        assert f'<span class="meth">{m}</span>' in html
    lines = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert len(lines) == 12 * 4 and all(len(r["tokens"]) == len(r["scores"]) > 0 for r in lines)
    agree = pd.read_csv(out / "agreement.csv", index_col="method")
    assert agree.shape == (4, 4) and (agree.to_numpy().diagonal() == 1).all()
    assert ((agree.to_numpy() >= -1) & (agree.to_numpy() <= 1)).all()
    top = pd.read_csv(out / "top_tokens.csv")
    assert set(top.columns) == {"method", "cls", "word", "mean_score", "count", "rank"} and len(top) > 0
    assert (top["count"] >= 2).all()  # smoke.yaml: min_count 2
    summary = pd.read_csv(out / "summary.csv").set_index("metric")["value"]
    assert summary["examples_scored"] == 12
    for png in ("top_tokens.png", "agreement.png"):
        assert (out / png).stat().st_size > 5000
    assert "02_token_importance_explorer" in (tmp_path / "results.md").read_text()
