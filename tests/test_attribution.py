"""Attribution methods: occlusion equals a hand-written leave-one-out, IG is complete, grad x input is
exact on a linear model, batching does not change scores, the registry and agreement behave."""

import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tmlib.importance import attribution as A
from tmlib.selective.types import TokenScores

TEXTS = ["a great , wonderful film", "truly awful acting <b>", "unbelievably boring and far too long", "ok"]


@pytest.fixture(scope="module")
def model():
    from tmlib.core.models import load_classifier

    m = load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    with torch.no_grad():  # a sharper head so probabilities move visibly with the input
        m.classifier.weight.mul_(40.0)
    return m.eval()


def _p(model, ids, cls):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits
    return torch.softmax(logits, -1)[0, cls].item()


@pytest.mark.parametrize("mode", ["remove", "mask"])
def test_occlusion_equals_manual_leave_one_out(model, tokenizer, mode):
    res = A.occlusion(model, tokenizer, TEXTS, mode=mode, batch_size=5)  # batches span texts
    for text, ts in zip(TEXTS, res):
        ids = tokenizer(text)["input_ids"]
        probs = [_p(model, ids, c) for c in range(2)]
        pred = int(np.argmax(probs))
        assert ts.pred == pred and ts.tokens == tokenizer.convert_ids_to_tokens(ids[1:-1])
        manual = []
        for i in range(1, len(ids) - 1):  # every non-special position
            occluded = (
                ids[:i] + ids[i + 1 :] if mode == "remove" else ids[:i] + [tokenizer.mask_token_id] + ids[i + 1 :]
            )
            manual.append(probs[pred] - _p(model, occluded, pred))
        np.testing.assert_allclose(ts.scores, manual, atol=2e-6)
    assert np.abs(np.concatenate([r.scores for r in res])).max() > 1e-3, "scores should not be trivially zero"


def test_integrated_gradients_completeness(model, tokenizer):
    res = A.integrated_gradients(model, tokenizer, TEXTS[:3], n_steps=64, batch_size=2)
    for text, ts in zip(TEXTS[:3], res):
        ids = tokenizer(text)["input_ids"]
        base = [ids[0]] + [tokenizer.pad_token_id] * (len(ids) - 2) + [ids[-1]]
        c = ts.meta["target"]
        gap = _p(model, ids, c) - _p(model, base, c)
        assert abs(gap) > 1e-4, "the test needs a baseline the model can tell apart from the text"
        assert ts.scores.sum() == pytest.approx(gap, abs=0.02 * abs(gap) + 1e-6)
        assert abs(ts.meta["delta"]) < 0.02 * abs(gap) + 1e-6
        assert np.abs(ts.scores).max() > 1e-5


def test_ig_mask_baseline_and_logit_output(model, tokenizer):
    ts = A.integrated_gradients(model, tokenizer, TEXTS[:1], baseline="mask", output="logit", n_steps=48)[0]
    ids = tokenizer(TEXTS[0])["input_ids"]
    base = [ids[0]] + [tokenizer.mask_token_id] * (len(ids) - 2) + [ids[-1]]
    with torch.no_grad():
        f = lambda x: model(input_ids=torch.tensor([x])).logits[0, ts.meta["target"]].item()
    assert ts.scores.sum() == pytest.approx(f(ids) - f(base), rel=0.02, abs=1e-5)


class _LinearBag(torch.nn.Module):
    """logits = W @ sum_i e_i over unpadded tokens: grad x input for class c is exactly e_i . w_c."""

    def __init__(self, vocab=30522, dim=4, classes=2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.emb.weight.data = torch.randn(vocab, dim, generator=g)
        self.head = torch.nn.Linear(dim, classes, bias=False)
        self.head.weight.data = torch.randn(classes, dim, generator=g)
        self.config = types.SimpleNamespace(num_labels=classes)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None):
        e = self.emb(input_ids) if inputs_embeds is None else inputs_embeds
        m = attention_mask if attention_mask is not None else torch.ones(e.shape[:2])
        return types.SimpleNamespace(logits=self.head((e * m[..., None]).sum(1)))


def test_grad_x_input_exact_on_linear_model(tokenizer):
    lin = _LinearBag()
    res = A.grad_x_input(lin, tokenizer, TEXTS, labels=[1, 0, 0, 1], target="label", output="logit", batch_size=3)
    for text, ts in zip(TEXTS, res):
        ids = torch.tensor(tokenizer(text)["input_ids"][1:-1])
        expected = (lin.emb.weight[ids] @ lin.head.weight[ts.label]).detach().numpy()
        np.testing.assert_allclose(ts.scores, expected, rtol=1e-5, atol=1e-6)
        assert ts.scores.shape == (len(ts.tokens),) and ts.meta["target"] == ts.label
    # sign: a token whose embedding points along w_c supports class c
    signs = np.sign(np.concatenate([r.scores for r in res]))
    assert (signs > 0).any() and (signs < 0).any()
    # with output='prob' (2 classes) d p1 / d e_i = p1 * p0 * (w1 - w0)
    prob = A.grad_x_input(lin, tokenizer, TEXTS[:1], labels=[1], target="label")[0]
    ids = tokenizer(TEXTS[0])["input_ids"]
    p0, p1 = torch.softmax(lin(input_ids=torch.tensor([ids])).logits, -1)[0].tolist()
    e = lin.emb.weight[torch.tensor(ids[1:-1])]
    expected = (p1 * p0 * e @ (lin.head.weight[1] - lin.head.weight[0])).detach().numpy()
    np.testing.assert_allclose(prob.scores, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", ["occlusion", "grad_x_input", "integrated_gradients"])
def test_batching_does_not_change_scores(model, tokenizer, method):
    kw = {"n_steps": 8} if method == "integrated_gradients" else {}
    one = A.score_tokens(method, model, tokenizer, TEXTS, batch_size=1, **kw)
    many = A.score_tokens(method, model, tokenizer, TEXTS, batch_size=16, **kw)
    for a, b in zip(one, many):
        assert a.tokens == b.tokens and a.pred == b.pred and a.method == method
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_special_tokens_excluded_and_truncation_recorded(model, tokenizer):
    long = " ".join(["word"] * 50)
    res = A.occlusion(model, tokenizer, ["hello there", long], max_length=12)
    assert res[0].tokens == ["hello", "there"] and not res[0].meta["truncated"]
    assert len(res[1].tokens) == 10 and res[1].meta["truncated"]
    assert all(t not in ("[CLS]", "[SEP]", "[PAD]") for r in res for t in r.tokens)


def test_errors_name_the_problem(model, tokenizer):
    with pytest.raises(
        ValueError,
        match="unknown importance method 'lime'; valid: occlusion, grad_x_input, integrated_gradients, buffer",
    ):
        A.score_tokens("lime", model, tokenizer, TEXTS)
    with pytest.raises(ValueError, match="labels are required"):
        A.occlusion(model, tokenizer, TEXTS, target="label")
    with pytest.raises(ValueError, match="2 labels"):
        A.occlusion(model, tokenizer, TEXTS, labels=[0, 1])
    with pytest.raises(TypeError, match="wrap it"):
        A.occlusion(model, tokenizer, "a single string")
    with pytest.raises(ValueError, match="unknown baseline"):
        A.integrated_gradients(model, tokenizer, TEXTS, baseline="zeros")
    with pytest.raises(ValueError, match="unknown occlusion mode"):
        A.occlusion(model, tokenizer, TEXTS, mode="blank")
    with pytest.raises(ValueError, match="out of range"):
        A.occlusion(model, tokenizer, TEXTS[:1], labels=[5], target="label")
    assert A.occlusion(model, tokenizer, []) == []


def test_rank_agreement_and_matrix():
    def ts(scores, tokens=None):
        return TokenScores("t", tokens or [f"w{i}" for i in range(len(scores))], np.asarray(scores, float))

    a = [ts([1, 2, 3, 4]), ts([4, 1, 2, 3]), ts([0, 0, 0, 0])]
    b = [ts([10, 20, 30, 40]), ts([-4, -1, -2, -3]), ts([1, 2, 3, 4])]
    r = A.rank_agreement(a, b)
    assert r["n_texts"] == 2 and r["n_skipped"] == 1  # constant scores have no ranking
    assert r["spearman"] == pytest.approx(0.0)  # mean of +1 and -1
    mat = A.method_agreement({"x": a, "y": b, "z": a})
    assert mat.loc["x", "z"] == pytest.approx(1.0) and mat.loc["x", "y"] == mat.loc["y", "x"]
    assert list(mat.index) == ["x", "y", "z"] and np.allclose(np.diag(mat), 1)
    with pytest.raises(ValueError, match="tokenised it differently"):
        A.rank_agreement([ts([1, 2, 3])], [ts([1, 2, 3], ["a", "b", "c"])])


def test_buffer_dispatch_passes_config_and_labels(model, tokenizer, monkeypatch):
    """The registry reaches tmlib.selective.buffer lazily; here a stand-in module records the call."""
    calls = {}

    @dataclass
    class BufferConfig:
        delta: float = 0.01
        max_length: int = 128

    def buffer_importance(model_, tok, texts, labels, cfg):
        calls.update(texts=texts, labels=labels, cfg=cfg)
        return [TokenScores(t, ["x"], [1.0], important=[1], label=y, pred=y) for t, y in zip(texts, labels)]

    fake = types.ModuleType("tmlib.selective.buffer")
    fake.BufferConfig, fake.buffer_importance = BufferConfig, buffer_importance
    monkeypatch.setitem(sys.modules, "tmlib.selective.buffer", fake)
    out = A.score_tokens("buffer", model, tokenizer, TEXTS[:2], labels=[1, 0], delta=0.05)
    assert calls["labels"] == [1, 0] and calls["cfg"].delta == 0.05
    assert out[0].method == "buffer" and out[0].meta["labels_from"] == "gold" and out[0].meta["display_offset"] == 0.05
    out = A.score_tokens("buffer", model, tokenizer, TEXTS[:2])
    preds = [r.pred for r in A.occlusion(model, tokenizer, TEXTS[:2])]
    assert calls["labels"] == preds and out[0].meta["labels_from"] == "prediction" and out[0].label is None
    with pytest.raises(ValueError, match="unknown option.*delt.*valid: delta, max_length"):
        A.score_tokens("buffer", model, tokenizer, TEXTS[:2], delt=0.1)
