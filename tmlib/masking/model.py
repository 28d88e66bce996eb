"""Wrap a Hugging Face BERT / RoBERTa / DistilBERT model with learned binary weight masks.

    model = load_classifier("minilm", ["neg", "pos"], seed=0)
    apply_masks(model, MaskConfig(), seed=0)          # in place; only mask scores train now
    fit(model, data, cfg, Classification(tok), params=mask_parameters(model), on_step=[tracker])
    sparsity_report(model)                             # % of weights kept per block and module type
    sd = effective_state_dict(model)                   # same keys as the plain HF model, weight = W * mask
    plain = to_plain(model)                            # a plain HF model with the effective weights

Embeddings, LayerNorms and every bias stay pretrained and frozen.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from torch import nn

from tmlib.masking.config import HEAD_NAMES, POOLER_NAMES, MaskConfig, MaskConfigError
from tmlib.masking.layer import MaskedLinear

_BLOCK_RE = re.compile(r"^(?P<prefix>.*?\.(?:layer|layers)\.(?P<idx>\d+))\.(?P<rel>.+)$")


@dataclass(frozen=True)
class MaskedModule:
    name: str  # full module name
    block: int  # encoder block index; -1 for pooler and head
    type: str  # module type (query, ..., pooler, head)


def _first_linear(model: nn.Module, candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` that names a (masked) linear layer of ``model``."""
    modules = dict(model.named_modules())
    return next((n for n in candidates if isinstance(modules.get(n), nn.Linear | MaskedLinear)), None)


def _head_name(model: nn.Module) -> str | None:
    return _first_linear(model, HEAD_NAMES)


def plan_masks(model: nn.Module, cfg: MaskConfig) -> list[MaskedModule]:
    """Which Linear modules ``cfg`` selects in ``model`` (nothing is changed)."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | MaskedLinear)]
    in_blocks = [(n, _BLOCK_RE.match(n)) for n, _ in linears]
    n_blocks = 1 + max((int(m["idx"]) for _, m in in_blocks if m), default=-1)
    plan: list[MaskedModule] = []
    if cfg.target_modules:
        if n_blocks == 0:
            raise MaskConfigError(
                f"{type(model).__name__} has no encoder blocks named '*.layer.<i>.*'; "
                "masking needs a BERT/RoBERTa/DistilBERT-style model"
            )
        blocks = set(cfg.selected_blocks(n_blocks))
        for name, m in in_blocks:
            if m and int(m["idx"]) in blocks:
                t = cfg.module_type(m["rel"])
                if t is not None:
                    plan.append(MaskedModule(name, int(m["idx"]), t))
        if not plan:
            raise MaskConfigError(
                f"target_modules {list(cfg.target_modules)} match no Linear layer of "
                f"{type(model).__name__}; block-relative names are e.g. "
                f"{sorted({m['rel'] for _, m in in_blocks if m})[:6]}"
            )
    if cfg.pooler:
        p = _first_linear(model, POOLER_NAMES)
        if p is not None:
            plan.append(MaskedModule(p, -1, "pooler"))
    if cfg.head == "masked":
        h = _head_name(model)
        if h is None:
            raise MaskConfigError(
                f"{type(model).__name__} has no classifier head named {HEAD_NAMES}; "
                "use head='trained' or a *ForSequenceClassification model"
            )
        plan.append(MaskedModule(h, -1, "head"))
    return plan


def apply_masks(model: nn.Module, cfg: MaskConfig | None = None, seed: int | None = None) -> nn.Module:
    """Freeze ``model`` and replace the selected ``nn.Linear`` layers by :class:`MaskedLinear` (in place).

    Only the mask scores train afterwards (plus the classifier head when ``cfg.head == 'trained'``).
    Score initialisation is seeded by ``seed`` (module order is fixed, so the same seed gives the
    same scores).
    """
    cfg = cfg or MaskConfig()
    if any(isinstance(m, MaskedLinear) for m in model.modules()):
        raise ValueError("model already has masked layers; apply_masks once, or call unmask(model) first")
    plan = plan_masks(model, cfg)
    gen = torch.Generator()
    gen.manual_seed(0 if seed is None else int(seed))
    for p in model.parameters():
        p.requires_grad_(False)
    for item in plan:
        lin = model.get_submodule(item.name)
        model.set_submodule(item.name, MaskedLinear.from_linear(lin, cfg.tau, cfg.init_sparsity, gen))
    if cfg.head == "trained":
        h = _head_name(model)
        if h is None:
            raise MaskConfigError(f"{type(model).__name__} has no classifier head named {HEAD_NAMES}")
        for p in model.get_submodule(h).parameters():
            p.requires_grad_(True)
    model.mask_config = cfg
    model.masked_modules = plan
    return model


def masked_layers(model: nn.Module) -> dict[str, MaskedLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, MaskedLinear)}


def mask_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The mask scores, in module order."""
    return [m.scores for m in masked_layers(model).values()]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Everything that trains after :func:`apply_masks`: scores, plus a trained head if configured."""
    return [p for p in model.parameters() if p.requires_grad]


def _module_info(model: nn.Module) -> dict[str, MaskedModule]:
    plan = getattr(model, "masked_modules", None)
    if plan is None:
        out = {}
        for n in masked_layers(model):
            m = _BLOCK_RE.match(n)
            out[n] = MaskedModule(n, int(m["idx"]) if m else -1, m["rel"] if m else n)
        return out
    return {p.name: p for p in plan}


def sparsity_report(model: nn.Module):
    """DataFrame, one row per masked layer: module, block, type, weights, kept, kept_pct."""
    import pandas as pd

    info = _module_info(model)
    rows = []
    for name, layer in masked_layers(model).items():
        mask = layer.mask()
        kept = int(mask.sum().item())
        i = info.get(name, MaskedModule(name, -1, name))
        rows.append(
            {
                "module": name,
                "block": i.block,
                "type": i.type,
                "weights": mask.numel(),
                "kept": kept,
                "kept_pct": 100.0 * kept / mask.numel(),
            }
        )
    return pd.DataFrame(rows, columns=["module", "block", "type", "weights", "kept", "kept_pct"])


class MaskFlipTracker:
    """An ``on_step`` hook for :func:`tmlib.core.training.fit`: every ``every`` steps, logs the share of weights
    kept and how many mask bits flipped since the last record (``logs['mask_kept_pct']``, ``['mask_flips']``)."""

    def __init__(self, every: int = 10):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self.rows: list[dict] = []
        self._last: dict[str, torch.Tensor] | None = None

    def _masks(self, model) -> dict[str, torch.Tensor]:
        return {n: m.scores.detach() > m.tau for n, m in masked_layers(model).items()}

    def __call__(self, step: int, model: nn.Module, logs: dict) -> None:
        if self._last is None:
            self._last = self._masks(model)  # state after the first step; flips count from here
        if step % self.every:
            return
        now = self._masks(model)
        total = sum(v.numel() for v in now.values())
        kept = sum(int(v.sum()) for v in now.values())
        flips = sum(int((now[k] ^ self._last[k]).sum()) for k in now)
        self._last = now
        row = {
            "step": step,
            "kept_pct": 100.0 * kept / total,
            "flips": flips,
            "flip_pct": 100.0 * flips / total,
            "loss": logs.get("loss"),
        }
        self.rows.append(row)
        logs["mask_kept_pct"], logs["mask_flips"] = row["kept_pct"], flips

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["step", "kept_pct", "flips", "flip_pct", "loss"])


def effective_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with the SAME keys as the unmasked HF model; masked weights are ``W * mask``."""
    layers = masked_layers(model)
    sd = {}
    for k, v in model.state_dict().items():
        mod, _, leaf = k.rpartition(".")
        if mod in layers:
            if leaf == "scores":
                continue
            if leaf == "weight":
                v = layers[mod].effective_weight()
        sd[k] = v.detach().clone()
    return sd


def unmask(model: nn.Module) -> nn.Module:
    """In place: replace every MaskedLinear by an ``nn.Linear`` holding ``W * mask``; all params trainable again."""
    for name, layer in list(masked_layers(model).items()):
        lin = nn.Linear(
            layer.in_features,
            layer.out_features,
            bias=layer.bias is not None,
            device=layer.weight.device,
            dtype=layer.weight.dtype,
        )
        with torch.no_grad():
            lin.weight.copy_(layer.effective_weight())
            if layer.bias is not None:
                lin.bias.copy_(layer.bias)
        model.set_submodule(name, lin)
    for p in model.parameters():
        p.requires_grad_(True)
    for attr in ("mask_config", "masked_modules"):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


def to_plain(model: nn.Module) -> nn.Module:
    """A plain HF model (a copy) with the effective weights; ``model`` keeps its masks."""
    return unmask(copy.deepcopy(model))


def fold_masks(model: nn.Module, fold: bool = True) -> nn.Module:
    """Switch every masked layer to (or back from) the folded inference mode."""
    for layer in masked_layers(model).values():
        layer.fold() if fold else layer.unfold()
    return model
