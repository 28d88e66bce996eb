"""A BERT classifier's logits computing only what its head reads.

``BertForSequenceClassification`` reads one position of the last layer: ``[CLS]`` (through the pooler).
Every other position of the LAST layer is computed and thrown away: its query projection, the attention
of its query, the attention output projection and the feed-forward block (10 of the 12 ``d x d``
matmuls per position; keys and values are still needed for all positions). On MiniLM (6 layers) that is
14% of the forward pass's matmul work. :func:`cls_logits` runs the embeddings and the first ``L - 1``
layers as the model does (same modules, same attention implementation and mask), then the last layer
for the ``[CLS]`` query only: the same logits up to float rounding (tests/test_cls_forward.py checks
it against ``model(**batch).logits`` for eager and SDPA attention, fp32 and bf16 autocast).

Used by the buffer method's walk (:class:`tmlib.selective.buffer.BufferConfig.cls_only`), where one
sentence of ``n`` tokens costs ``n`` forward passes, and by classifier training and evaluation under
``TrainConfig(kernels="fast")`` (:class:`ClsOnlyClassifier`: the same loss and gradients up to float
rounding, and in train mode the same dropout masks drawn in the same order; the backward pass skips the
thrown-away positions too). Models that are not a BERT encoder classifier (:func:`supports`) use their own
forward. peft models (LoRA) are read through their base model.
"""

from __future__ import annotations

import torch


def base_classifier(model):
    """The Hugging Face classifier inside a peft wrapper (LoRA: its layers are replaced in place, so the
    base model's forward runs the adapters), else ``model`` itself."""
    inner = getattr(getattr(model, "base_model", None), "model", None)
    return inner if inner is not None and hasattr(model, "peft_config") else model


def supports(model) -> bool:
    """True for a ``BertForSequenceClassification`` (also with tmlib's masked / LoRA layers inside: the
    submodules are called, not re-implemented; also inside a peft wrapper) that is an encoder with a pooler."""
    from transformers import BertForSequenceClassification

    model = base_classifier(model)
    if not isinstance(model, BertForSequenceClassification):
        return False
    cfg = model.config
    return (
        not cfg.is_decoder
        and not getattr(cfg, "add_cross_attention", False)
        and model.bert.pooler is not None
        and len(model.bert.encoder.layer) >= 1
    )


def _draws(module) -> float:
    """The dropout probability ``module`` applies now (0 in eval mode or without dropout)."""
    return float(module.p) if module.training and module.p > 0 else 0.0


def _row0_dropout(x: torch.Tensor, p: float, full_shape: tuple, row: tuple) -> torch.Tensor:
    """Dropout on ``x``, the ``row`` slice of a tensor of ``full_shape``, with that slice of the mask dropout
    draws for the FULL tensor: the same random numbers, drawn in the same order, as the model's own forward
    (CPU dropout: a ``bernoulli_(1 - p)`` noise tensor of the input's shape and dtype, divided by ``1 - p``)."""
    if p == 0.0:
        return x
    noise = torch.empty(full_shape, dtype=x.dtype, device=x.device).bernoulli_(1 - p)
    noise.div_(1 - p)
    return x * noise[row]


def cls_logits(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``model(input_ids, attention_mask, token_type_ids).logits`` with the last layer computed for
    position 0 only.

    In train mode the last layer's dropouts (attention probabilities, attention output, feed-forward
    output) draw their masks for the full tensors and keep the ``[CLS]`` row: on CPU the random numbers are
    the same, in the same order, as in the model's own forward (eager or SDPA attention draw alike there), so
    a training run follows the model's own trajectory up to float rounding (tests/test_cls_forward.py). On
    CUDA, where dropout and SDPA use fused kernels with their own random offsets, the masks differ."""
    from transformers.masking_utils import create_bidirectional_mask
    from transformers.models.bert.modeling_bert import ALL_ATTENTION_FUNCTIONS, eager_attention_forward

    if not supports(model):
        raise TypeError(
            f"cls_logits needs a BertForSequenceClassification encoder, got {type(model).__name__}; "
            f"call the model itself"
        )
    model = base_classifier(model)
    bert = model.bert
    h = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    mask = create_bidirectional_mask(config=bert.config, inputs_embeds=h, attention_mask=attention_mask)
    *first, last = bert.encoder.layer
    for layer in first:
        h = layer(h, mask)
    sa = last.attention.self
    b, n, _ = h.shape
    heads, dh = sa.num_attention_heads, sa.attention_head_size
    cls = h[:, :1]
    # a query projection with dropout inside (LoRA with lora_dropout) draws for every row, as the model does
    query_draws = sa.training and any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in sa.query.modules())
    q = (sa.query(h)[:, :1] if query_draws else sa.query(cls)).view(b, 1, heads, dh).transpose(1, 2)
    k = sa.key(h).view(b, n, heads, dh).transpose(1, 2)
    v = sa.value(h).view(b, n, heads, dh).transpose(1, 2)
    if mask is not None and mask.dim() == 4 and mask.shape[-2] != 1:
        mask = mask[:, :, :1, :]  # the [CLS] query's row
    p_attn = _draws(sa.dropout)
    if p_attn == 0.0:
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager_attention_forward)
        ctx, _ = attend(sa, q, k, v, mask, dropout=0.0, scaling=sa.scaling)
    else:  # eager attention, the [CLS] row of a full-size dropout mask
        w = torch.matmul(q, k.transpose(2, 3)) * sa.scaling
        if mask is not None:
            w = w.masked_fill(~mask, torch.finfo(w.dtype).min) if mask.dtype == torch.bool else w + mask
        w = torch.nn.functional.softmax(w, dim=-1)
        w = _row0_dropout(w, p_attn, (b, heads, n, n), (slice(None), slice(None), slice(0, 1)))
        ctx = torch.matmul(w, v).transpose(1, 2).contiguous()
    ctx = ctx.reshape(b, 1, -1).contiguous()
    row = (slice(None), slice(0, 1))
    so = last.attention.output  # BertSelfOutput: dense, dropout, LayerNorm(x + input)
    x = so.dense(ctx)
    a = so.LayerNorm(_row0_dropout(x, _draws(so.dropout), (b, n, x.shape[-1]), row) + cls)
    fo = last.output  # BertOutput after BertIntermediate
    x = fo.dense(last.intermediate(a))
    out = fo.LayerNorm(_row0_dropout(x, _draws(fo.dropout), (b, n, x.shape[-1]), row) + a)
    pooled = bert.pooler(out)  # reads position 0
    return model.classifier(model.dropout(pooled))


class ClsOnlyClassifier(torch.nn.Module):
    """A single-label classifier whose forward computes the last layer for ``[CLS]`` only
    (:func:`cls_logits`) and the model's own loss: cross-entropy over ``num_labels`` classes, as
    ``BertForSequenceClassification`` computes it for integer labels. ``model`` stays a submodule (the
    parameters are the same tensors); :meth:`wraps` says which models can be wrapped."""

    def __init__(self, model):
        super().__init__()
        if not self.wraps(model):
            raise TypeError(
                f"ClsOnlyClassifier needs a single-label BertForSequenceClassification encoder, got "
                f"{type(model).__name__}; train the model itself (TrainConfig(kernels='hf'))"
            )
        self.model = model

    @classmethod
    def for_kernels(cls, model, kernels: str):
        """The network to call under ``kernels`` (:data:`tmlib.core.precision.KERNELS`): ``ClsOnlyClassifier(model)``
        for
        ``"fast"`` where :meth:`wraps` allows it, else ``model`` itself."""
        return cls(model) if kernels == "fast" and cls.wraps(model) else model

    @staticmethod
    def wraps(model) -> bool:
        cfg = base_classifier(model).config if supports(model) else None
        return (
            cfg is not None
            and cfg.num_labels > 1
            and getattr(cfg, "problem_type", None) in (None, "single_label_classification")
        )

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        logits = cls_logits(self.model, input_ids, attention_mask, token_type_ids)
        loss = None
        if labels is not None:
            if labels.dtype.is_floating_point:
                raise TypeError("ClsOnlyClassifier computes the single-label loss: pass integer class labels")
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)
