"""Importance tagger: learns synthetic buffer labels, selects by dev F1, labels a corpus aligned per token."""

import numpy as np
import pytest
import torch

from tmlib.core.models import load_token_classifier
from tmlib.core.training import TrainConfig, fit
from tmlib.selective.tagger import ImportanceTagging, WeightedTagger, label_corpus, predict_importance, tagger_examples
from tmlib.selective.types import TokenScores

KEY = {"great", "awful", "wonderful", "boring", "terrible", "loved"}


def _scores(tokenizer, texts):
    out = []
    for t in texts:
        toks = tokenizer.tokenize(t)
        imp = [int(x in KEY) for x in toks]
        out.append(TokenScores(text=t, tokens=toks, scores=np.array(imp, float), important=imp, label=1, pred=1))
    return out


@pytest.fixture(scope="module")
def trained(tokenizer):
    import random

    rng = random.Random(0)
    words = ["the", "film", "was", "a", "story", "cast", "plot", "and", "very", "quite", "movie", "it"]
    texts = [
        " ".join(rng.choice(words + list(KEY) if rng.random() < 0.3 else words) for _ in range(rng.randint(4, 10)))
        for _ in range(160)
    ]
    train, dev = _scores(tokenizer, texts[:128]), _scores(tokenizer, texts[128:])
    model = load_token_classifier("scratch:tiny", num_labels=2, seed=0)
    cfg = TrainConfig(lr=3e-3, batch_size=16, epochs=6, warmup_ratio=0.0, progress=False, seed=0)
    return model, fit(model, train, cfg, ImportanceTagging(tokenizer, dev, class_weight=3.0), desc="tagger")


def test_tagger_learns_and_selects_by_f1(trained):
    model, res = trained
    assert res.dev["f1"] > 0.9, res.dev
    best = max(r["f1"] for r in res.fit.history)
    assert res.fit.best["f1"] == best and abs(res.dev["f1"] - best) < 1e-9, "kept the epoch with the best dev F1"
    assert 0 < res.positive_rate < 0.5


def test_label_corpus_and_predict(trained, tokenizer):
    model, _ = trained
    corpus = ["the plot was boring", "a wonderful cast and the film", "it was the movie", "great"]
    ds = label_corpus(model, tokenizer, corpus, batch_size=2, progress=False)
    assert ds.column_names == ["text", "token_ids", "importance", "importance_logit", "important"]
    for row in ds:
        assert len(row["token_ids"]) == len(row["importance"]) == len(row["importance_logit"]) == len(row["important"])
        # the logit ranks as the official ModelGen does: higher class-1 logit, not always higher P(important)
        with torch.no_grad():
            ids = torch.tensor([[tokenizer.cls_token_id, *row["token_ids"], tokenizer.sep_token_id]])
            logits = model(input_ids=ids).logits[0, 1:-1].float()
        np.testing.assert_allclose(row["importance_logit"], logits[:, 1].numpy(), atol=1e-4)
        toks = tokenizer.convert_ids_to_tokens(row["token_ids"])
        assert [int(t in KEY) for t in toks] == row["important"]
    assert ds["text"] == corpus  # input order kept despite length-sorted batches
    ts = predict_importance(model, tokenizer, corpus[:2])
    assert ts[0].tokens == tokenizer.tokenize(corpus[0]) and ts[0].method == "tagger"
    np.testing.assert_allclose(ts[1].scores, ds[1]["importance"], atol=1e-6)


def test_weighting_and_errors(tokenizer):
    model = load_token_classifier("scratch:tiny", num_labels=2, seed=0).eval()
    b = {
        "input_ids": torch.tensor([[101, 2307, 102]]),
        "attention_mask": torch.ones(1, 3, dtype=torch.long),
        "labels": torch.tensor([[-100, 1, -100]]),
    }
    l1 = WeightedTagger(model, 1.0)(**b).loss
    l3 = WeightedTagger(model, 3.0)(**b).loss
    assert torch.isclose(l1, l3)  # one labelled token: the weight cancels in the weighted mean
    b["input_ids"] = torch.tensor([[101, 2307, 1996, 102]])
    b["attention_mask"] = torch.ones(1, 4, dtype=torch.long)
    b["labels"] = torch.tensor([[-100, 1, 0, -100]])
    logits = model(input_ids=b["input_ids"]).logits[0, 1:3]
    lp = torch.log_softmax(logits, -1)
    expect = -(3 * lp[0, 1] + lp[1, 0]) / 4
    assert torch.isclose(WeightedTagger(model, 3.0)(**b).loss, expect, atol=1e-6)
    with pytest.raises(ValueError, match="no hard labels"):
        tagger_examples([TokenScores("a", ["a"], [0.1])], tokenizer)
    with pytest.raises(ValueError, match="2-label"):
        fit(
            load_token_classifier("scratch:tiny", num_labels=3),
            _scores(tokenizer, ["great"]),
            TrainConfig(progress=False),
            ImportanceTagging(tokenizer, _scores(tokenizer, ["great"])),
            desc="tagger",
        )
    with pytest.raises(TypeError, match="wrap it"):
        predict_importance(model, tokenizer, "a text")


def test_threshold_tuned_on_dev_and_saved_with_the_model(tokenizer, tmp_path):
    """A rare class the argmax never predicts: the dev-tuned threshold finds it, and it travels with the model."""
    from tmlib.selective.tagger import tagger_metrics, tagger_threshold

    model = load_token_classifier("scratch:tiny", num_labels=2, seed=0).eval()

    class Fixed(torch.nn.Module):  # P(important) = 0.3 on token id 2307, 0.1 elsewhere
        config = model.config

        def forward(self, input_ids, attention_mask=None):
            p = torch.where(input_ids == 2307, 0.3, 0.1)
            return type("O", (), {"logits": torch.stack([torch.log1p(-p), torch.log(p)], -1)})()

    b = {
        "input_ids": torch.tensor([[101, 2307, 1996, 2307, 1996, 102]]),
        "attention_mask": torch.ones(1, 6),
        "labels": torch.tensor([[-100, 1, 0, 1, 0, -100]]),
    }
    m = tagger_metrics(Fixed(), [b])
    assert m["f1_argmax"] == 0.0 and m["f1"] == 1.0 and 0.1 <= m["threshold"] < 0.3
    model.config.importance_threshold = m["threshold"]
    model.save_pretrained(tmp_path)
    assert tagger_threshold(load_token_classifier(str(tmp_path), num_labels=2)) == m["threshold"]
    assert tagger_threshold(model, 0.9) == 0.9
