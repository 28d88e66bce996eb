"""Configuration of learned binary weight masks (Zhao et al., EMNLP 2020).

Each masked linear layer keeps its pretrained weight ``W`` frozen and learns real-valued ``scores``
of the same shape; the forward pass uses ``W * (scores > tau)``. Scores start uniform on
``[-0.02, s]`` with ``s = (0.02 + tau) / init_sparsity - 0.02``, so that a fraction ``init_sparsity``
of the weights starts masked out (5% -> ``U(-0.02, 0.58)`` for tau = 0.01).

Which layers are masked is chosen by *module type* inside the encoder blocks:

=============  ==============================  ===========================
type           BERT / RoBERTa / ELECTRA name   DistilBERT name
=============  ==============================  ===========================
``query``      ``attention.self.query``        ``attention.q_lin``
``key``        ``attention.self.key``          ``attention.k_lin``
``value``      ``attention.self.value``        ``attention.v_lin``
``attn_out``   ``attention.output.dense``      ``attention.out_lin``
``ffn_in``     ``intermediate.dense``          ``ffn.lin1``
``ffn_out``    ``output.dense``                ``ffn.lin2``
=============  ==============================  ===========================

Other layers can be named with ``"re:<regex>"`` entries, matched against the module name relative
to its block (e.g. ``"re:attention\\.self\\.(query|key)$"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# module type -> block-relative module names it stands for (first match wins, any architecture)
MODULE_TYPES: dict[str, tuple[str, ...]] = {
    "query": ("attention.self.query", "attention.q_lin"),
    "key": ("attention.self.key", "attention.k_lin"),
    "value": ("attention.self.value", "attention.v_lin"),
    "attn_out": ("attention.output.dense", "attention.out_lin"),
    "ffn_in": ("intermediate.dense", "ffn.lin1"),
    "ffn_out": ("output.dense", "ffn.lin2"),
}
DEFAULT_TARGETS = tuple(MODULE_TYPES)
# names of the layer between the encoder and the classifier (pooler) and of the classifier head itself
POOLER_NAMES = (
    "bert.pooler.dense",
    "roberta.pooler.dense",
    "electra.pooler.dense",
    "pooler.dense",
    "classifier.dense",
    "pre_classifier",
)
HEAD_NAMES = ("classifier.out_proj", "classifier", "score")
HEAD_MODES = ("masked", "trained")


class MaskConfigError(ValueError):
    """A :class:`MaskConfig` value is out of range or names nothing."""


@dataclass
class MaskConfig:
    tau: float = 0.01  # threshold: a weight is kept where its score > tau
    init_sparsity: float = 0.05  # fraction of weights masked out at initialisation
    target_modules: tuple[str, ...] = DEFAULT_TARGETS  # module types (MODULE_TYPES) or "re:<regex>" on
    # ^ block-relative names
    blocks: tuple[int, ...] | None = None  # encoder blocks to mask; None = all but the first `skip_first_blocks`
    skip_first_blocks: int = 2  # used when blocks is None (official code masks blocks 2..11 of 12)
    pooler: bool = True  # mask the pooler (BERT) / classifier.dense (RoBERTa)
    # ^ / pre_classifier (DistilBERT)
    head: Literal["masked", "trained"] = "masked"  # classifier head: frozen random + masked (paper) or trained in fp32

    def __post_init__(self):
        self.target_modules = tuple(self.target_modules)
        if self.blocks is not None:
            self.blocks = tuple(int(b) for b in self.blocks)
        if not 0.0 < self.init_sparsity < 1.0:
            raise MaskConfigError(f"init_sparsity must be in (0, 1), got {self.init_sparsity}; the paper uses 0.05")
        if not self.tau > -0.02:
            raise MaskConfigError(
                f"tau must be > -0.02 (scores start on [-0.02, s]), got {self.tau}; the paper uses 0.01"
            )
        if self.head not in HEAD_MODES:
            raise MaskConfigError(f"head must be one of {list(HEAD_MODES)}, got {self.head!r}")
        if self.skip_first_blocks < 0:
            raise MaskConfigError(f"skip_first_blocks must be >= 0, got {self.skip_first_blocks}")
        if self.blocks is not None and any(b < 0 for b in self.blocks):
            raise MaskConfigError(f"blocks must be block indices >= 0, got {list(self.blocks)}")
        if not self.target_modules and not self.pooler and self.head != "masked":
            raise MaskConfigError("nothing to mask: target_modules is empty, pooler=False and head='trained'")
        for t in self.target_modules:
            if t.startswith("re:"):
                try:
                    re.compile(t[3:])
                except re.error as exc:
                    raise MaskConfigError(f"target module pattern {t!r} is not a valid regex: {exc}") from None
            elif t not in MODULE_TYPES:
                raise MaskConfigError(
                    f"unknown target module type {t!r}; valid types: {', '.join(MODULE_TYPES)}, "
                    f"or 're:<regex>' matched against block-relative module names"
                )

    @property
    def init_high(self) -> float:
        """Upper end ``s`` of the uniform score initialisation ``U(-0.02, s)``."""
        return (0.02 + self.tau) / self.init_sparsity - 0.02

    def selected_blocks(self, n_blocks: int) -> list[int]:
        if self.blocks is None:
            if self.skip_first_blocks >= n_blocks and self.target_modules:
                raise MaskConfigError(
                    f"skip_first_blocks={self.skip_first_blocks} leaves none of the model's "
                    f"{n_blocks} blocks to mask; lower it or pass blocks=[...]"
                )
            return list(range(self.skip_first_blocks, n_blocks))
        bad = [b for b in self.blocks if b >= n_blocks]
        if bad:
            raise MaskConfigError(f"blocks {bad} do not exist: the model has {n_blocks} blocks (0..{n_blocks - 1})")
        return sorted(set(self.blocks))

    def module_type(self, relative_name: str) -> str | None:
        """The module type of a block-relative Linear name, or None if it is not a target."""
        for t in self.target_modules:
            if t.startswith("re:"):
                if re.search(t[3:], relative_name):
                    return relative_name
            elif relative_name in MODULE_TYPES[t]:
                return t
        return None

    def to_dict(self) -> dict:
        return {
            "tau": self.tau,
            "init_sparsity": self.init_sparsity,
            "target_modules": list(self.target_modules),
            "blocks": None if self.blocks is None else list(self.blocks),
            "skip_first_blocks": self.skip_first_blocks,
            "pooler": self.pooler,
            "head": self.head,
        }

    @classmethod
    def from_dict(cls, d: dict) -> MaskConfig:
        return cls(**d)
