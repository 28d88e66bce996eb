"""Notebook 02's experiment functions: config checks, word aggregation, caching per method, outputs."""

import json

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset

from tmlib.core.config import ConfigError, from_dict
from tmlib.experiments import explorer as E
from tmlib.selective.types import TokenScores


def test_config_rejects_bad_values(tmp_path):
    ok = from_dict(E.ExplorerConfig, {"out_dir": str(tmp_path)})
    assert ok.methods == E.ALL_METHODS and not ok.interactive
    with pytest.raises(ConfigError, match="unknown.*lime.*valid: occlusion"):
        E.ExplorerConfig(out_dir="x", methods=["occlusion", "lime"])
    with pytest.raises(ConfigError, match="top_method 'buffer' must be one of"):
        E.ExplorerConfig(out_dir="x", methods=["occlusion"], top_method="buffer")
    with pytest.raises(ConfigError, match="ig_steps"):
        E.ExplorerConfig(out_dir="x", ig_steps=1)
    with pytest.raises(ConfigError, match="unknown parameter"):
        from_dict(E.ExplorerConfig, {"out_dir": "x", "n_exampels": 3})
    assert ok.method_kwargs("integrated_gradients")["n_steps"] == ok.ig_steps
    assert ok.method_kwargs("buffer")["delta"] == ok.delta


def ts(tokens, scores, pred, method="m"):
    return TokenScores(
        " ".join(tokens), tokens, np.asarray(scores, float), pred=pred, method=method, meta={"target": pred}
    )


def test_top_tokens_joins_pieces_counts_and_ranks():
    results = {
        "m": [
            ts(["un", "##watch", "##able", "the", "plot"], [0.2, 0.3, 0.1, 0.95, 0.05], 0),
            ts(["un", "##watch", "##able", "mess"], [0.4, 0.4, 0.4, 0.5], 0),
            ts(["great", "plot"], [0.8, 0.1], 1),
            ts(["great", "fun", "!"], [0.6, 0.2, 0.9], 1),
        ]
    }
    assert E.word_scores(results["m"][0])[0] == ("unwatchable", pytest.approx(0.6))
    top = E.top_tokens(results, ["negative", "positive"], top_k=5, min_count=2)
    assert top.to_dict("records") == [
        {
            "method": "m",
            "cls": "negative",
            "word": "unwatchable",
            "mean_score": pytest.approx(0.9),
            "count": 2,
            "rank": 1,
        },
        {"method": "m", "cls": "positive", "word": "great", "mean_score": pytest.approx(0.7), "count": 2, "rank": 1},
    ]
    # "the" and "!" would win on score but are a stop word and punctuation
    every = E.top_tokens(results, ["negative", "positive"], min_count=1, drop_stopwords=False)
    assert every.iloc[0]["word"] == "the" and "!" in set(every["word"])
    assert E.top_tokens({"m": []}, ["a"]).empty


def test_record_round_trip():
    a = TokenScores(
        "a b",
        ["a", "b"],
        [0.5, -0.25],
        important=[1, 0],
        label=1,
        pred=0,
        method="buffer",
        meta={"delta": np.float32(0.01), "truncated": False},
    )
    b = E.from_record(json.loads(json.dumps(E.to_record(a, 3))))
    assert b.tokens == a.tokens and np.allclose(b.scores, a.scores) and b.important.tolist() == [1, 0]
    assert (b.label, b.pred, b.method, b.meta["delta"]) == (1, 0, "buffer", pytest.approx(0.01))


@pytest.fixture(scope="module")
def tiny(tokenizer):
    from tmlib.core.models import load_classifier

    return load_classifier("scratch:tiny", ["negative", "positive"], seed=0).eval(), tokenizer


def test_scores_cached_per_method(tmp_path, tiny):
    model, tok = tiny
    ds = Dataset.from_dict({"text": ["a great film", "an awful mess", "boring"], "label": [1, 0, 0]})
    cfg = E.ExplorerConfig(
        out_dir=str(tmp_path),
        model="scratch:tiny",
        methods=["occlusion", "integrated_gradients"],
        top_method="occlusion",
        ig_steps=4,
        progress=False,
    )
    first, timing = E.Experiment(cfg).scores(model, tok, ds)
    assert not timing["reused"].any() and [len(v) for v in first.values()] == [3, 3]
    again, timing = E.Experiment(cfg).scores(model, tok, ds)
    assert timing["reused"].all()
    for m in first:
        assert all(
            np.allclose(a.scores, b.scores, atol=1e-6) and a.tokens == b.tokens for a, b in zip(first[m], again[m])
        )
    cfg2 = E.ExplorerConfig(**{**cfg.__dict__, "ig_steps": 6})
    _, timing = E.Experiment(cfg2).scores(model, tok, ds)
    assert timing.set_index("method")["reused"].to_dict() == {"occlusion": True, "integrated_gradients": False}
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[1])["method"] == "integrated_gradients"
    report = E.write_report(cfg, first, ["negative", "positive"])
    html = report.read_text()
    assert html.count('<div class="ex same">') == 3 and ">awful<" in html


def test_run_explorer_end_to_end(tmp_path):
    cfg = E.ExplorerConfig(
        out_dir=str(tmp_path),
        model="scratch:tiny",
        train_examples=16,
        max_steps=2,
        lr=1e-3,
        batch_size=8,
        max_length=24,
        n_examples=4,
        methods=["occlusion", "grad_x_input"],
        min_count=1,
        progress=False,
    )
    exp = E.Experiment(cfg)
    res = exp.run()
    for name in (
        "report.html",
        "scores.jsonl",
        "top_tokens.csv",
        "agreement.csv",
        "summary.csv",
        "timing.csv",
        "config.json",
        "scorer/manifest.json",
        "scorer/model/config.json",
    ):
        assert (tmp_path / name).is_file(), name
    from scipy.stats import spearmanr

    summary = pd.read_csv(tmp_path / "summary.csv").set_index("metric")["value"]
    # the scorer's accuracies are its metrics; its test accuracy that of its saved test predictions
    metrics = json.loads((tmp_path / "scorer" / "metrics.json").read_text())
    pred = np.load(tmp_path / "scorer" / "predictions.npy")
    assert metrics["test_accuracy"] == pytest.approx((pred == np.asarray(res.data["test"]["label"])).mean())
    assert summary["scorer_dev_accuracy"] == round(metrics["dev_accuracy"], 4) == round(res.metrics["dev_accuracy"], 4)
    assert summary["scorer_test_accuracy"] == round(metrics["test_accuracy"], 4)
    # the explained texts are the split's first n_examples rows, scored in order by each method
    assert list(res.examples["text"]) == list(res.data[cfg.split]["text"][:4])
    assert [t.text for t in res.scores["occlusion"]] == [t.text for t in res.scores["grad_x_input"]]
    assert [t.text for t in res.scores["occlusion"]] == list(res.examples["text"])
    # agreement: the mean per-text Spearman correlation of the two methods' scores (scipy's), in the csv and summary
    rhos = [
        spearmanr(a.scores, b.scores).statistic
        for a, b in zip(res.scores["occlusion"], res.scores["grad_x_input"])
        if len(a.tokens) >= 3 and np.ptp(a.scores) > 0 and np.ptp(b.scores) > 0
    ]
    rho = res.agreement.loc["occlusion", "grad_x_input"]
    assert rhos and rho == pytest.approx(np.mean(rhos)) and res.agreement.loc["grad_x_input", "occlusion"] == rho
    agree = pd.read_csv(tmp_path / "agreement.csv", index_col="method")
    pd.testing.assert_frame_equal(agree, res.agreement.rename_axis("method"))
    assert summary["spearman_occlusion_vs_grad_x_input"] == round(rho, 4)
    figs = exp.figures(res)
    assert set(figs) == {"top_tokens", "agreement"} and (tmp_path / "agreement.png").stat().st_size > 3000
    explorer = E.make_explorer(cfg, res)
    assert "gold: <b>" in explorer.set_example(0)
