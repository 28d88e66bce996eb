"""``MaskedLinear``: a frozen linear layer whose weights are gated by a learned binary mask.

Forward: ``y = x @ (W * m).T + b`` with ``m = (scores > tau)``. The binarisation is not
differentiable, so gradients pass straight through it (:class:`BinarizeSTE`): ``dL/dscores =
dL/dm = dL/d(W*m) * W``. ``W`` and ``b`` never change.

For serving, :meth:`MaskedLinear.fold` multiplies the mask into the weight once; the forward pass
is then a plain ``F.linear`` (same values, bit for bit, as the on-the-fly product).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BinarizeSTE(torch.autograd.Function):
    """``(scores > tau).float()`` forward; identity (straight-through) backward."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, tau: float) -> torch.Tensor:
        return (scores > tau).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def init_scores(
    shape, tau: float, init_sparsity: float, generator: torch.Generator | None = None, dtype=torch.float32
) -> torch.Tensor:
    """Scores ~ U(-0.02, s), s = (0.02 + tau) / init_sparsity - 0.02: P(score <= tau) = init_sparsity."""
    high = (0.02 + tau) / init_sparsity - 0.02
    return torch.rand(shape, generator=generator, dtype=dtype) * (high + 0.02) - 0.02


class MaskedLinear(nn.Module):
    """A linear layer with frozen ``weight``/``bias`` and trainable real-valued ``scores``.

    Its state dict holds ``weight``, ``bias`` (same names as ``nn.Linear``) plus ``scores``.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        tau: float = 0.01,
        init_sparsity: float = 0.05,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.tau = float(tau)
        self.scores = nn.Parameter(
            init_scores(weight.shape, tau, init_sparsity, generator, weight.dtype).to(weight.device)
        )
        self._folded: torch.Tensor | None = None

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, tau: float = 0.01, init_sparsity: float = 0.05, generator: torch.Generator | None = None
    ) -> MaskedLinear:
        return cls(linear.weight, linear.bias, tau, init_sparsity, generator)

    def mask(self) -> torch.Tensor:
        """The binary mask (float 0/1, no gradient)."""
        return (self.scores.detach() > self.tau).to(self.weight.dtype)

    def set_mask(self, mask: torch.Tensor) -> None:
        """Set scores so that ``mask()`` equals ``mask`` exactly (used when loading a packed mask)."""
        mask = mask.to(device=self.scores.device).bool()
        if mask.shape != self.scores.shape:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not fit a layer of shape {tuple(self.scores.shape)}"
            )
        with torch.no_grad():
            self.scores.copy_(torch.where(mask, self.tau + 1.0, self.tau - 1.0))
        if self._folded is not None:
            self.fold()

    def effective_weight(self) -> torch.Tensor:
        """``W * mask`` (no gradient)."""
        return self.weight.detach() * self.mask()

    @property
    def folded(self) -> bool:
        return self._folded is not None

    def fold(self) -> MaskedLinear:
        """Inference mode: compute ``W * mask`` once and reuse it (call again after changing scores)."""
        self._folded = self.effective_weight()
        return self

    def unfold(self) -> MaskedLinear:
        self._folded = None
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._folded is not None:
            if torch.is_grad_enabled() and self.scores.requires_grad and self.training:
                raise RuntimeError("MaskedLinear is folded (inference mode) but is being trained; call unfold() first")
            return F.linear(x, self._folded, self.bias)
        return F.linear(x, self.weight * BinarizeSTE.apply(self.scores, self.tau), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tau={self.tau}, folded={self.folded}"
