import pytest
import torch

from tmlib.masking.config import MaskConfig, MaskConfigError
from tmlib.masking.layer import BinarizeSTE, MaskedLinear, init_scores


def _layer(seed=0, **kw):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(16, 8)
    gen = torch.Generator().manual_seed(seed)
    return lin, MaskedLinear.from_linear(lin, generator=gen, **kw)


def test_threshold_is_strict():
    s = torch.tensor([-1.0, 0.0, 0.01, 0.0100001, 0.5])
    assert BinarizeSTE.apply(s, 0.01).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_ste_gradient_is_identity_through_the_binarisation():
    s = torch.tensor([-0.5, 0.005, 0.02, 0.7], requires_grad=True)
    g = torch.tensor([1.0, -2.0, 3.0, 4.0])
    (BinarizeSTE.apply(s, 0.01) * g).sum().backward()
    assert torch.equal(s.grad, g)


def test_scores_gradient_equals_weight_gradient_times_weight():
    lin, ml = _layer()
    x = torch.randn(5, 16)
    ml(x).pow(2).sum().backward()
    # reference: y = x (W*m)^T + b, dL/dm = dL/dW_eff * W
    w_eff = (lin.weight.detach() * ml.mask()).requires_grad_(True)
    torch.nn.functional.linear(x, w_eff, lin.bias.detach()).pow(2).sum().backward()
    torch.testing.assert_close(ml.scores.grad, w_eff.grad * lin.weight.detach())
    assert ml.weight.grad is None and ml.bias.grad is None and not ml.weight.requires_grad


def test_init_distribution_matches_paper():
    cfg = MaskConfig()
    assert cfg.init_high == pytest.approx(0.58)
    s = init_scores((400, 500), 0.01, 0.05, torch.Generator().manual_seed(0))
    assert s.min() >= -0.02 and s.max() <= 0.58
    assert (s <= 0.01).float().mean().item() == pytest.approx(0.05, abs=0.003)
    assert s.mean().item() == pytest.approx(0.28, abs=0.005)
    s2 = init_scores((100, 100), 0.01, 0.3, torch.Generator().manual_seed(0))
    assert (s2 <= 0.01).float().mean().item() == pytest.approx(0.3, abs=0.02)


def test_forward_equals_linear_with_masked_weight_and_fold_is_bitwise_equal():
    lin, ml = _layer()
    x = torch.randn(4, 16)
    ref = torch.nn.functional.linear(x, lin.weight * ml.mask(), lin.bias)
    with torch.no_grad():
        out = ml(x)
        assert torch.equal(out, ref)
        ml.fold()
        assert ml.folded and torch.equal(ml(x), out)
    ml.unfold()
    assert not ml.folded


def test_full_mask_reproduces_plain_linear():
    lin, ml = _layer()
    ml.set_mask(torch.ones(8, 16, dtype=torch.bool))
    x = torch.randn(3, 16)
    assert torch.equal(ml(x), lin(x))
    with pytest.raises(ValueError, match="shape"):
        ml.set_mask(torch.ones(4, 4))


def test_set_mask_is_exact_and_refreshes_fold():
    _, ml = _layer()
    target = torch.rand(8, 16) > 0.5
    ml.fold()
    ml.set_mask(target)
    assert torch.equal(ml.mask().bool(), target)
    assert torch.equal(ml._folded, ml.weight * target)


def test_training_a_folded_layer_is_refused():
    _, ml = _layer()
    ml.fold().train()
    with pytest.raises(
        RuntimeError, match=r"^MaskedLinear is folded \(inference mode\) but is being trained; call unfold"
    ):
        ml(torch.randn(2, 16))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(init_sparsity=0.0), "init_sparsity"),
        (dict(init_sparsity=1.5), "init_sparsity"),
        (dict(tau=-0.5), "tau"),
        (dict(head="frozen"), "head"),
        (dict(target_modules=("qkv",)), "unknown target module type 'qkv'"),
        (dict(target_modules=("re:(",)), "not a valid regex"),
        (dict(skip_first_blocks=-1), "skip_first_blocks"),
    ],
)
def test_config_validation(kw, match):
    with pytest.raises(MaskConfigError, match=match):
        MaskConfig(**kw)


def test_defaults_seeding_dtype_and_strict_mask():
    lin = torch.nn.Linear(300, 200)
    ml = MaskedLinear.from_linear(lin)
    assert ml.tau == 0.01 and (ml.in_features, ml.out_features) == (300, 200)
    assert (ml.mask() == 0).float().mean().item() == pytest.approx(0.05, abs=0.005)  # init_sparsity 0.05
    direct = MaskedLinear(lin.weight, lin.bias)
    assert direct.tau == 0.01 and (direct.mask() == 0).float().mean().item() == pytest.approx(0.05, abs=0.005)
    a = MaskedLinear.from_linear(lin, generator=torch.Generator().manual_seed(3))
    b = MaskedLinear(lin.weight, lin.bias, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.scores, b.scores)  # the generator given draws the scores
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(init_scores((4, 5), 0.01, 0.05, g1), init_scores((4, 5), 0.01, 0.05, g2))
    assert init_scores((2, 2), 0.01, 0.05, dtype=torch.float64).dtype == torch.float64
    wide = MaskedLinear.from_linear(torch.nn.Linear(4, 3).double())
    assert wide.scores.dtype == torch.float64 and wide.mask().dtype == torch.float64
    with torch.no_grad():
        wide.scores.fill_(wide.tau)
    assert wide.mask().sum() == 0  # a score equal to tau is masked out
