"""tmlib.masking.landscape: exact endpoints, no mutation of inputs, an analytic convex case, plane coordinates."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from tmlib.masking.landscape import (
    DEFAULT_GAMMAS,
    LandscapeError,
    bezier_coefficients,
    bezier_path,
    gamma_grid,
    interpolate_states,
    linear_path,
    path_summary,
    plane,
    plane_basis,
    plane_point,
    train_bezier,
)
from tmlib.tasks.classify import EvalBatches, encode

# ------------------------------------------------------------------------------------------ toy model


class LogReg(torch.nn.Module):
    """Multinomial logistic regression: logits are linear in the parameters, so the loss along a
    straight line in weight space is the cross-entropy of linearly interpolated logits (convex in g)."""

    def __init__(self, d: int = 4, k: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = torch.nn.Linear(d, k)
        self.register_buffer("ids", torch.arange(d))  # a non-float buffer, copied rather than interpolated

    def forward(self, x, labels):
        logits = self.lin(x)
        return SimpleNamespace(loss=F.cross_entropy(logits, labels), logits=logits)


class ToyBatches:
    """Duck-typed EvalBatches: cached batches of dicts + the number of examples."""

    def __init__(self, x, y, batch_size=7):
        self.batches = [
            {"x": x[i : i + batch_size], "labels": y[i : i + batch_size]} for i in range(0, len(y), batch_size)
        ]
        self.n = len(y)

    def __len__(self):
        return self.n


FP32_SUM = 16 * float(torch.finfo(torch.float32).eps)  # two float32 sums of the same terms in another order


@pytest.fixture
def toy():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 4, generator=g)
    y = torch.randint(0, 3, (30,), generator=g)
    return LogReg(seed=0), LogReg(seed=1), LogReg(seed=2), ToyBatches(x, y), (x, y)


def snapshot(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ tiny BERT


@pytest.fixture(scope="module")
def bert_pair():
    from tmlib.core.models import load_classifier

    a = load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    b = load_classifier("scratch:tiny", ["negative", "positive"], seed=1)
    return a.eval(), b.eval()


@pytest.fixture
def bert_batches(tokenizer, tiny_task):
    return {s: EvalBatches(encode(tiny_task[s], tokenizer, 32), tokenizer, batch_size=5) for s in ("dev", "test")}


def logits_of(model, batches):
    with torch.no_grad():
        return torch.cat([model(**b).logits for b in batches.batches])


def test_endpoints_reproduce_logits_exactly(bert_pair, bert_batches):
    a, b = bert_pair
    seen = {}

    def record(model, batches):  # evaluate hook: capture the scratch model's logits at each point
        seen.setdefault(len(seen), logits_of(model, batches))
        return {"loss": 0.0, "accuracy": 0.0}

    linear_path(a, a, b, bert_batches["dev"], gammas=[0.0, 1.0], evaluate=record, progress=False)
    assert torch.equal(seen[0], logits_of(a, bert_batches["dev"]))
    assert torch.equal(seen[1], logits_of(b, bert_batches["dev"]))
    assert not torch.equal(seen[0], seen[1])
    # the stored metrics at the endpoints are those of the endpoint models
    from tmlib.tasks.classify import evaluate_classifier

    df = linear_path(a, a.state_dict(), b, bert_batches, gammas=[0.0, 0.5, 1.0], progress=False)
    assert list(df.columns) == ["gamma", "split", "loss", "accuracy"] and len(df) == 6
    for g, m in ((0.0, a), (1.0, b)):
        for split in ("dev", "test"):
            row = df[(df.gamma == g) & (df.split == split)].iloc[0]
            ref = evaluate_classifier(m, bert_batches[split])
            # the same logits (asserted exactly above); the mean loss is summed in another order on the two paths,
            # so equal up to float32 accumulation: a few ulps (on AVX2 kernels 1.4e-8 relative, on AVX512 exact)
            assert row.loss == pytest.approx(ref["loss"], abs=0, rel=FP32_SUM) and row.accuracy == ref["accuracy"]


def test_interpolate_states_values_and_exact_ends(toy):
    a, b, *_ = toy
    for g in (0.0, 1.0):
        assert same(interpolate_states(a, b, g), snapshot(a if g == 0 else b))
    mid = interpolate_states(a, b, 0.25)
    assert torch.allclose(mid["lin.weight"], 0.75 * a.lin.weight + 0.25 * b.lin.weight, atol=1e-7)
    assert torch.equal(mid["ids"], a.ids) and mid["ids"].dtype == torch.long
    out = interpolate_states(a, b, -0.2)  # extrapolation past A
    assert torch.allclose(out["lin.bias"], 1.2 * a.lin.bias - 0.2 * b.lin.bias, atol=1e-7)


def test_inputs_are_not_mutated(bert_pair, bert_batches):
    a, b = bert_pair
    template = type(a)(a.config)
    before = {n: snapshot(m) for n, m in (("a", a), ("b", b), ("t", template))}
    sa = {k: v.clone() for k, v in a.state_dict().items()}
    sa_before = {k: v.clone() for k, v in sa.items()}
    flags = [(p.requires_grad) for p in template.parameters()]
    template.train()
    linear_path(template, sa, b, bert_batches["dev"], gammas=[-0.2, 0.3, 1.2], progress=False)
    plane(template, template, sa, b, bert_batches["dev"], resolution=2, progress=False)
    interpolate_states(sa, b, 0.7)
    assert same(sa, sa_before)
    for n, m in (("a", a), ("b", b), ("t", template)):
        assert same(snapshot(m), before[n]), f"{n} was modified"
    assert template.training and flags == [p.requires_grad for p in template.parameters()]


def test_convex_toy_matches_analytic_curve(toy):
    a, b, _, batches, (x, y) = toy
    gammas = np.linspace(-0.5, 1.5, 21)
    df = linear_path(a, a, b, batches, gammas=gammas, progress=False)
    assert (df.split == "dev").all()
    za, zb = a.lin(x).detach().double(), b.lin(x).detach().double()
    expected = [F.cross_entropy((1 - g) * za + g * zb, y).item() for g in gammas]
    acc = [((((1 - g) * za + g * zb).argmax(-1)) == y).double().mean().item() for g in gammas]
    assert np.allclose(df.loss.values, expected, rtol=1e-5, atol=1e-6)
    assert np.allclose(df.accuracy.values, acc)
    second = np.diff(df.loss.values, 2)
    assert (second >= -1e-6).all(), "cross-entropy along a line through a linear model is convex"


def test_plane_coordinates_are_true_positions():
    # o = 0, x = 3 * e_w00, y = e_w00 + 2 * e_w01: coordinates (0,0), (3,0), (1,2)
    o = {"w": torch.zeros(2, 2), "ids": torch.arange(3)}
    x = {"w": torch.tensor([[3.0, 0.0], [0.0, 0.0]]), "ids": torch.arange(3)}
    y = {"w": torch.tensor([[1.0, 2.0], [0.0, 0.0]]), "ids": torch.arange(3)}
    e1, e2, c = plane_basis(o, x, y)
    assert c["origin"] == (0.0, 0.0)
    assert c["x"] == pytest.approx((3.0, 0.0)) and c["y"] == pytest.approx((1.0, 2.0))
    assert float((e1["w"] * e2["w"]).sum()) == pytest.approx(0.0, abs=1e-7)
    for name, st in (("x", x), ("y", y)):
        p = plane_point(o, x, y, *c[name])
        assert torch.allclose(p["w"], st["w"], atol=1e-6) and torch.equal(p["ids"], o["ids"])


def test_plane_on_toy_models(toy):
    a, b, c, batches, (xs, ys) = toy
    res = plane(a, a, b, c, {"dev": batches}, resolution=(4, 3), margin=0.25, names=("p", "m", "f"), progress=False)
    assert len(res.grid) == 12 and set(res.points.name) == {"p", "m", "f"}
    # model coordinates: distances between the models are preserved
    d = {
        k: torch.cat([v.flatten() for k, v in snapshot(m).items() if v.is_floating_point()])
        for k, m in (("p", a), ("m", b), ("f", c))
    }
    for u, v in (("p", "m"), ("p", "f"), ("m", "f")):
        dist = np.hypot(res.coords[u][0] - res.coords[v][0], res.coords[u][1] - res.coords[v][1])
        assert dist == pytest.approx(float((d[u] - d[v]).norm()), rel=1e-5)
    # the three models evaluated at their coordinates give their own losses
    for name, m in (("p", a), ("m", b), ("f", c)):
        row = res.points[res.points.name == name].iloc[0]
        assert row.loss == pytest.approx(F.cross_entropy(m.lin(xs), ys).item(), rel=1e-6)
    # the grid covers the models with the margin
    assert res.grid.alpha.min() < min(v[0] for v in res.coords.values())
    assert res.grid.beta.max() > max(v[1] for v in res.coords.values())
    # a grid point equals the analytic loss at o + alpha e1 + beta e2
    row = res.grid.iloc[5]
    st = plane_point(a, b, c, row.alpha, row.beta)
    z = xs @ st["lin.weight"].T + st["lin.bias"]
    assert row.loss == pytest.approx(F.cross_entropy(z, ys).item(), rel=1e-5)
    frame = res.to_frame()
    assert list(frame.columns) == ["point", "alpha", "beta", "split", "loss", "accuracy"] and len(frame) == 15


def test_clear_errors(toy):
    a, b, _, batches, _ = toy
    with pytest.raises(LandscapeError, match="different parameter names"):
        interpolate_states(a, {"lin.weight": a.lin.weight}, 0.5)
    with pytest.raises(LandscapeError, match="shape"):
        interpolate_states(a, LogReg(k=2), 0.5)
    other = LogReg(seed=1)
    other.ids += 1
    with pytest.raises(LandscapeError, match="non-float buffer ids differs"):
        interpolate_states(a, other, 0.5)
    with pytest.raises(LandscapeError, match="nn.Module or a state dict"):
        interpolate_states(a, [1, 2], 0.5)
    with pytest.raises(LandscapeError, match="eval_batches must be"):
        linear_path(a, a, b, [1, 2], progress=False)
    with pytest.raises(LandscapeError, match="model_template must be an nn.Module"):
        linear_path(a.state_dict(), a, b, batches, progress=False)
    with pytest.raises(LandscapeError, match="collinear"):
        plane(a, a, b, interpolate_states(a, b, 2.0), batches, progress=False)
    with pytest.raises(LandscapeError, match="gammas is empty"):
        linear_path(a, a, b, batches, gammas=[], progress=False)


def test_gamma_grid_and_summary():
    assert DEFAULT_GAMMAS[0] == -0.2 and DEFAULT_GAMMAS[-1] == 1.2 and 0.0 in DEFAULT_GAMMAS and 1.0 in DEFAULT_GAMMAS
    g = gamma_grid(-0.2, 1.2, 8)
    assert 0.0 in g and 1.0 in g and g[0] == -0.2 and g[-1] == 1.2
    df = pd.DataFrame(
        {"gamma": [-0.2, 0.0, 0.5, 1.0, 1.2], "split": "test", "loss": 0.0, "accuracy": [0.5, 0.80, 0.785, 0.79, 0.6]}
    )
    s = path_summary(df)
    assert s["max_drop"] == pytest.approx(0.005) and s["within_1pt"] and s["argmin_gamma"] == 0.5
    df.loc[2, "accuracy"] = 0.70
    s = path_summary(df)
    assert s["max_drop"] == pytest.approx(0.09) and not s["within_1pt"]
    with pytest.raises(LandscapeError, match="no rows for split"):
        path_summary(df, split="dev")


# ------------------------------------------------------------------------------------------ Bezier curves


class Product(torch.nn.Module):
    """score = <w1, w2> * x: the solutions w1 = w2 = +-2 e1 are separated, on the straight line, by a
    barrier (at the midpoint the score is 0: loss log 2, chance accuracy), but joined by a curve through
    w1 = w2 = 2 e2, where the score is as good. A trained Bezier curve has to find that detour."""

    def __init__(self, w):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.tensor(w, dtype=torch.float32))
        self.w2 = torch.nn.Parameter(torch.tensor(w, dtype=torch.float32))
        self.register_buffer("ids", torch.arange(2))

    def forward(self, x, labels):
        s = (self.w1 * self.w2).sum() * x[:, 0]
        logits = torch.stack([-s, s], -1)
        return SimpleNamespace(loss=F.cross_entropy(logits, labels), logits=logits)


def test_bezier_coefficients():
    assert bezier_coefficients(0) == (1, 0, 0) and bezier_coefficients(1) == (0, 0, 1)
    assert bezier_coefficients(0.5) == (0.25, 0.5, 0.25)


def test_trained_bezier_curve_lowers_the_barrier_of_the_straight_line():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, generator=g)
    y = (x[:, 0] > 0).long()
    data = ToyBatches(x, y, batch_size=16)
    a, b = Product([2.0, 0.0]), Product([-2.0, 0.3])  # both fit the data: <w1, w2> = 4, 4.09
    before = (snapshot(a), snapshot(b))
    ts = [0.0, 0.25, 0.5, 0.75, 1.0]
    line = linear_path(a, a, b, data, ts, progress=False)
    assert line.loss.max() > 0.6 > 8 * line.loss.iloc[[0, -1]].max()  # the barrier (loss ~ log 2 at the midpoint)
    curve = train_bezier(a, a, b, data.batches, steps=150, lr=0.05, seed=0, progress=False)
    assert same(before[0], snapshot(a)) and same(before[1], snapshot(b))  # inputs untouched
    assert torch.equal(curve.theta["ids"], a.ids) and list(curve.log.columns) == ["step", "t", "loss"]
    assert len(curve.log) == 150 and curve.log.t.between(0, 1).all()
    along = bezier_path(a, a, curve.theta, b, data, ts, progress=False)
    assert list(along.gamma) == ts and set(along.split) == {"dev"}
    ends = along.set_index("gamma")
    ref = line.set_index("gamma")
    assert ends.loc[0.0, "loss"] == ref.loc[0.0, "loss"] and ends.loc[1.0, "loss"] == ref.loc[1.0, "loss"]  # exact ends
    assert along.loss.max() < 0.5 * line.loss.max()  # the barrier is (largely) gone
    assert along.accuracy.min() >= 0.95
    # untrained (theta at the midpoint) the curve is the straight line
    mid = interpolate_states(a, b, 0.5)
    untrained = bezier_path(a, a, mid, b, data, ts, progress=False)
    np.testing.assert_allclose(untrained.loss, line.loss, rtol=1e-5)


def test_bezier_errors(toy):
    a, b, _, batches, _ = toy
    with pytest.raises(LandscapeError, match="steps must be >= 1"):
        train_bezier(a, a, b, batches.batches, steps=0)
    with pytest.raises(LandscapeError, match="train_batches is empty"):
        train_bezier(a, a, b, [], steps=1)


def test_bezier_kernels_and_precision_on_a_bert(bert_pair, bert_batches, monkeypatch):
    """kernels "fast" ([CLS]-only last layer, eager attention) trains the same curve as the model's own forward up
    to float rounding; bf16 autocast stays close; the template's attention is restored; bad values are refused."""
    import tmlib.tasks.cls_forward as cf

    a, b = bert_pair
    train = bert_batches["dev"].batches
    impl = a.config._attn_implementation
    calls, real = [], cf.cls_logits
    monkeypatch.setattr(cf, "cls_logits", lambda *x, **k: calls.append(1) or real(*x, **k))
    runs = {}
    for k, mp in (("hf", "no"), ("fast", "no"), ("fast", "bf16")):
        calls.clear()
        runs[(k, mp)] = train_bezier(
            a, a, b, train, steps=6, lr=1e-3, seed=3, progress=False, kernels=k, mixed_precision=mp
        )
        assert len(calls) == (6 if k == "fast" else 0)  # one [CLS]-only forward per step under "fast" only
    assert a.config._attn_implementation == impl
    hf, fast, bf16 = runs[("hf", "no")], runs[("fast", "no")], runs[("fast", "bf16")]
    assert list(hf.log.t) == list(fast.log.t) == list(bf16.log.t)  # same seed: same t and batches
    # fp32 both, but SDPA vs eager attention and the CPU's own kernels (AVX2 vs AVX512 blocking) round differently;
    # Adam's normalised steps amplify rounding where a gradient is near 0: after 6 steps at lr 1e-3 a parameter can
    # differ by a fraction of lr. Another batch or t (a real divergence) moves the loss by > 1e-2.
    np.testing.assert_allclose(fast.log.loss, hf.log.loss, rtol=1e-3, atol=1e-6)
    for k in hf.theta:
        torch.testing.assert_close(fast.theta[k], hf.theta[k], rtol=1e-3, atol=2e-4)
    np.testing.assert_allclose(bf16.log.loss, hf.log.loss, rtol=0.05)
    with pytest.raises(ValueError, match="kernels must be one of"):
        train_bezier(a, a, b, train, steps=1, kernels="turbo")
    with pytest.raises(ValueError, match="mixed_precision"):
        train_bezier(a, a, b, train, steps=1, mixed_precision="int8")
