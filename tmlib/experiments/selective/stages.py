"""The selective-masking pipeline as a graph of cached stages (:class:`tmlib.core.runs.Stage`).

::

    genept_data ──> genept ──┬──────────────────────────────────────────┬──> taskpt_g<G>_<method> ──> finetune/...
                             │ (scorer.model = "genept")                │          ^
                             └─> scorer ──> buffer ──> tagger ──> corpus_labels ──> taskpt_data_<method>
    genept, taskpt_* ──> probe (held-out MLM loss / top-1 of every checkpoint)

Asking for any stage builds what it depends on first (:meth:`tmlib.core.runs.RunStore.get`): the order
lives in the graph, not in the notebook's cells. Every key chains the keys of its upstream stages,
so changing e.g. the buffer delta rebuilds the tagger, the corpus labels, selective TaskPT and its
fine-tuning runs, and nothing else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tmlib.core.runs import RunStore, Stage
from tmlib.experiments.selective.analysis import (
    budget_gaps,
    compute_split,
    condition_costs,
    curve_summary,
    flag_failed,
    forward_flops,
    paired_gaps,
    summarize,
    train_flops,
    with_holm,
)
from tmlib.experiments.selective.config import SelectiveConfig
from tmlib.tasks.data import ASPECT_COLUMN, TaskRecipe, second_column
from tmlib.tasks.finetune import classifier_stage

# ----------------------------------------------------------------------------------------- values


@dataclass
class Checkpoints:
    """Models saved at several steps of one MLM run (GenePT or TaskPT) and the run's stats."""

    dirs: dict[int, Path | str]  # a folder, or a published checkpoint name (genept.checkpoints)
    stats: dict = field(default_factory=dict)

    def checkpoint(self, step: int) -> Path | str:
        if step not in self.dirs:
            raise KeyError(f"no checkpoint at step {step}; saved steps: {sorted(self.dirs)}")
        return self.dirs[step]

    @property
    def model_dir(self) -> Path:
        return self.dirs[max(self.dirs)]

    @property
    def selected(self) -> int:
        """The step fine-tuned as this run's result (TaskPT: lowest held-out MLM loss, or the last)."""
        return int(self.stats.get("selected", max(self.dirs)))


@dataclass
class BufferLabels:
    scores: dict  # split -> list[TokenScores]
    stats: dict


@dataclass
class SavedModel:
    model_dir: Path
    stats: dict


def _encoder_params(model) -> int:
    """Parameters touched per token (the embedding matrix is a lookup, not a matmul)."""
    return sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()


def _checkpoint_every(steps: int) -> int:
    """Steps between resumable checkpoints of an MLM run: four per run. Not at every loss-history point
    (20 per run): a checkpoint (weights, both AdamW moments: 270 MB for MiniLM) takes 0.2-0.5 s to
    write, 11 s of a 67-s TaskPT run at 20; it cannot change a result."""
    return max(1, steps // 4)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def split_corpus(
    texts: list[str], dev_fraction: float, seed: int, docs: list | None = None
) -> tuple[list[int], list[int]]:
    """Seeded (train, dev) row indices of a corpus: the dev rows are held out of TaskPT training and
    score its checkpoints (official: lowest MLM loss on a 10% dev split) and the MLM probe. With ``docs`` (one
    document key per row) whole documents are held out, so no dev sentence shares a row with a training one."""
    if docs is not None:
        keys = list(dict.fromkeys(docs))
        order = np.random.default_rng(seed).permutation(len(keys))
        n_dev = max(1, int(round(dev_fraction * len(keys)))) if len(keys) > 1 else 0
        dev_docs = {keys[i] for i in order[:n_dev]}
        dev = [i for i, d in enumerate(docs) if d in dev_docs]
        return [i for i, d in enumerate(docs) if d not in dev_docs], dev
    n = len(texts)
    order = np.random.default_rng(seed).permutation(n)
    n_dev = max(1, int(round(dev_fraction * n))) if n > 1 else 0
    return sorted(order[n_dev:].tolist()), sorted(order[:n_dev].tolist())


# ----------------------------------------------------------------------------------------- MLM runs


@dataclass(frozen=True)
class MLMRun:
    """The training recipe of one MLM run, GenePT or TaskPT: the one stage both are built by
    (:func:`mlm_run_stage`). Its rows come from a data stage (:class:`MLMData`); rows that carry ``labels``
    (masks drawn once) train through :class:`tmlib.selective.collators.StaticMLMCollator`, others through ``masking``'s
    collator (None: HF's random 15%)."""

    steps: tuple[int, ...]  # the model is saved at every step; the last is the budget
    lr: float
    batch_size: int
    max_length: int
    warmup_ratio: float
    seed: int
    mixed_precision: str = "auto"
    kernels: str = "fast"
    masking: str | None = None  # dynamic masking: a TaskPT method (selective | random | random15)
    fallback: str = "none"  # selective masking of a row without an important token (dynamic only)
    select: str = "last"  # checkpoint kept as the result: "dev_loss" (lowest held-out loss) | "last"

    def __post_init__(self):
        from tmlib.core.precision import resolve_fields

        resolve_fields(self, "mixed_precision")

    def key(self) -> dict:
        key = asdict(self)
        if self.kernels == "hf":
            key.pop("kernels")
        return key


@dataclass
class MLMData:
    """The packed rows of one MLM run; ``dev`` (held out, masks fixed) scores its checkpoints, or None."""

    train: Any
    dev: Any = None


def _save_mlm_data(obj: MLMData, d: Path) -> None:
    obj.train.save_to_disk(str(d / "train"))
    if obj.dev is not None:
        obj.dev.save_to_disk(str(d / "dev"))


def _load_mlm_data(d: Path) -> MLMData:
    from datasets import Dataset

    return MLMData(
        Dataset.load_from_disk(str(d / "train")),
        Dataset.load_from_disk(str(d / "dev")) if (d / "dev").exists() else None,
    )


def _save_checkpoints(obj: dict, d: Path) -> None:
    """Move the per-step models from the build's work dir into artifact ``d``."""
    import shutil

    for step in obj["steps"]:
        shutil.move(str(obj["work"] / f"step_{step}"), str(d / f"step_{step}"))
    _write_json(d / "stats.json", obj["stats"])


def _load_checkpoints(d: Path) -> Checkpoints:
    stats = _read_json(d / "stats.json")
    stats["saved"] = {int(step): v for step, v in stats.get("saved", {}).items()}  # JSON keys are strings
    if stats.get("published"):
        return Checkpoints({int(s): name for s, name in zip(stats["steps"], stats["published"])}, stats)
    return Checkpoints({int(s): d / f"step_{s}" for s in stats["steps"]}, stats)


def mlm_run_stage(
    name: str,
    run: MLMRun,
    data: Stage[MLMData],
    init: str | Stage[Checkpoints],
    tokenizer,
    init_step: int | None = None,
    progress: bool = True,
    desc: str = "MLM",
) -> Stage[Checkpoints]:
    """Stage ``name``: MLM-train ``init`` (a model name, or checkpoint ``init_step`` of an upstream MLM run) on
    ``data``'s rows, saving the model at every step of ``run.steps`` with a record (seconds since the start;
    with dev rows, the held-out MLM loss under the same masking as training). Resumable: the run checkpoints
    into the stage's work folder four times, and steps saved before an interruption keep their records."""
    from tmlib.core.training import TrainConfig

    def build(ctx, data, init=init):
        from tmlib.core.models import load_mlm
        from tmlib.core.training import fit
        from tmlib.selective.mlm import MaskedLM, corpus_tokens

        start = time.perf_counter()
        path = init if isinstance(init, str) else str(init.checkpoint(init_step))
        model = load_mlm(path, seed=run.seed)
        steps = list(run.steps)
        tcfg = TrainConfig(
            lr=run.lr,
            batch_size=run.batch_size,
            max_steps=max(steps),
            max_length=run.max_length,
            warmup_ratio=run.warmup_ratio,
            eval_every=max(1, max(steps) // 20),
            checkpoint_every=_checkpoint_every(max(steps)),
            seed=run.seed,
            group_by_length=True,
            mixed_precision=run.mixed_precision,
            kernels=run.kernels,
            progress=progress,
        )
        train_collator = None  # rows with labels: StaticMLMCollator (MaskedLM's choice)
        if run.masking is not None:
            train_collator = collator(run.masking, tokenizer, seed=run.seed, fallback=run.fallback)

        def record(m) -> dict:
            if data.dev is None:
                return {}
            # a fresh seeded collator (or the fixed masks) gives the same masks at every checkpoint
            dev = (
                collator(run.masking, tokenizer, seed=12345, fallback=run.fallback)
                if run.masking is not None
                else _static_or_plain(data.dev, tokenizer)
            )
            return {"dev_loss": mlm_dev_loss(m, data.dev, dev)}

        def on_save(step, m):
            d = ctx.work_dir / f"step_{step}"
            m.save_pretrained(d)
            _write_json(d / "record.json", {"seconds": time.perf_counter() - start, **record(m)})

        res = fit(
            model,
            data.train,
            tcfg,
            MaskedLM(tokenizer, collator=train_collator, save_at=steps, on_save=on_save),
            checkpoint_dir=ctx.work_dir,
            desc=desc,
        )
        saved = {}
        for step in steps:
            rec = ctx.work_dir / f"step_{step}" / "record.json"
            saved[step] = _read_json(rec)
            rec.unlink()
        selected = min(steps, key=lambda s: saved[s]["dev_loss"]) if run.select == "dev_loss" else max(steps)
        stats = {
            "steps": steps,
            "history": res.history,
            "saved": saved,
            "selected": selected,
            "params": _encoder_params(model),
            "train_rows": len(data.train),
            "dev_rows": 0 if data.dev is None else len(data.dev),
            "tokens_per_step": corpus_tokens(data.train) / len(data.train) * run.batch_size,
        }
        return {"work": ctx.work_dir, "steps": steps, "stats": stats}

    deps = {"data": data} if isinstance(init, str) else {"data": data, "init": init}
    origin = init if isinstance(init, str) else "<upstream>"  # the key: the run's recipe and where it starts
    return Stage(
        name,
        {"run": run.key(), "init": origin, "init_step": init_step},
        build,
        _save_checkpoints,
        _load_checkpoints,
        deps=deps,
        seed=run.seed,
    )


def _static_or_plain(rows, tokenizer):
    from tmlib.selective.collators import PlainMLMCollator, StaticMLMCollator

    return StaticMLMCollator(tokenizer) if "labels" in rows.column_names else PlainMLMCollator(tokenizer, seed=12345)


@dataclass(frozen=True)
class PublishedRecipe:
    """Published under-trained checkpoints (MultiBERTs) in place of a GenePT run, one per budget."""

    steps: tuple[int, ...]
    checkpoints: tuple[str, ...]

    name = "genept"

    def key(self) -> dict:
        return {"published": list(self.checkpoints), "steps": list(self.steps)}


def published_stage(recipe: PublishedRecipe) -> Stage[Checkpoints]:
    """Stage ``genept`` from published checkpoints: nothing is trained; each is loaded once to fail early."""

    def build(ctx):
        from tmlib.core.models import load_mlm

        for ckpt in recipe.checkpoints:
            load_mlm(ckpt)  # fail now, with the loader's clear message, if one cannot be loaded
        stats = {
            "steps": list(recipe.steps),
            "published": list(recipe.checkpoints),
            "history": [],
            "params": 0,
            "saved": {s: {"seconds": 0.0} for s in recipe.steps},
            "tokens_per_step": 0.0,
        }
        return {"work": ctx.work_dir, "steps": [], "stats": stats}

    return Stage(recipe.name, recipe.key(), build, _save_checkpoints, _load_checkpoints)


# ----------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class SelectivePlan:
    """What notebook 01's config asks for, as run recipes: the one reader of the training settings in
    :class:`SelectiveConfig` (stages take their recipes from here)."""

    genept: MLMRun  # one run, saved at every budget
    taskpt: dict[str, MLMRun]  # masking method -> its run (the same for every GenePT budget)
    scorer: Any  # TrainConfig of the buffer method's classifier
    tagger: TaggerRecipe
    finetune: Any  # TrainConfig of the fine-tuning runs (seed 0; each job sets its own)
    task: TaskRecipe  # the scorer's and the buffer labels' data
    finetune_task: TaskRecipe  # fine-tuning: the same dev rows, tested on the held-out pool (or the test split)
    genept_data: GeneptDataRecipe
    buffer: BufferRecipe
    rules: RulesRecipe
    corpus: CorpusRecipe
    taskpt_data: dict[str, TaskptDataRecipe]  # masking method -> its rows
    probe: ProbeRecipe


def plan(cfg: SelectiveConfig) -> SelectivePlan:
    """``cfg`` -> the recipes of every stage: the MLM runs, the data, the importance pipeline, the probe and the
    training configs of its classifiers. The only reader of the config's per-run settings."""
    from dataclasses import replace

    from tmlib.core.training import TrainConfig
    from tmlib.selective.buffer import RULE_VARIANTS

    g, tp, f = cfg.genept, cfg.taskpt, cfg.finetune
    common = dict(seed=cfg.pretrain_seed, mixed_precision=cfg.mixed_precision, kernels=cfg.kernels)
    genept = MLMRun(
        steps=tuple(g.steps),
        lr=g.lr,
        batch_size=g.batch_size,
        max_length=g.max_length,
        warmup_ratio=g.warmup_ratio,
        **common,
    )
    taskpt = {
        m: MLMRun(
            steps=tuple(tp.steps),
            lr=tp.lr,
            batch_size=tp.batch_size,
            max_length=tp.max_length,
            warmup_ratio=tp.warmup_ratio,
            masking=m if tp.masks == "dynamic" else None,
            fallback=tp.fallback,
            select=tp.select,
            **common,
        )
        for m in tp.methods
    }
    base = TrainConfig(
        progress=cfg.progress,
        seed=cfg.pretrain_seed,
        group_by_length=True,
        mixed_precision=cfg.mixed_precision,
        kernels=cfg.kernels,
        batch_size=f.batch_size,
        max_length=f.max_length,
        warmup_ratio=f.warmup_ratio,
        lr=f.lr,
        epochs=f.epochs,
    )
    seed = cfg.pretrain_seed
    source = dict(text_column=cfg.text_column, label_column=cfg.label_column, encoding=cfg.encoding)
    task = TaskRecipe(cfg.task, cfg.task_max_examples, seed=0, **source)
    finetune_task = TaskRecipe(
        cfg.task, cfg.task_max_examples, seed=0, test_pool=cfg.test_pool, max_test=cfg.max_test,
        max_train=f.max_train, **source,
    )  # fmt: skip
    tagger_train = replace(
        base,
        lr=cfg.tagger.lr,
        epochs=cfg.tagger.epochs,
        max_length=tp.max_length,
        warmup_ratio=TrainConfig.warmup_ratio,
    )
    data_keys = (
        "max_length", "dev_fraction", "packing", "short_seq_prob", "masks", "max_predictions", "fallback",
        "mask_positions", "rank",
    )  # fmt: skip
    return SelectivePlan(
        genept=genept,
        taskpt=taskpt,
        scorer=replace(base, lr=cfg.scorer.lr, epochs=cfg.scorer.epochs),
        tagger=TaggerRecipe(cfg.tagger, tagger_train, tp.max_length, f.batch_size, seed),
        finetune=replace(base, seed=0),
        task=task,
        finetune_task=finetune_task,
        genept_data=GeneptDataRecipe(
            g.corpus, g.max_sentences, g.max_length, seed, "minilm" if g.model.startswith("scratch:") else g.model
        ),
        buffer=BufferRecipe(cfg.buffer, task, seed, cfg.progress),
        rules=RulesRecipe(cfg.buffer, tuple(tuple(dict(v).items()) for v in RULE_VARIANTS), task, seed),
        corpus=CorpusRecipe(
            tp.corpus,
            tp.max_sentences,
            tp.max_length,
            cfg.buffer.stopwords if cfg.tagger.stopwords == "buffer" else "none",
            seed,
            cfg.tagger.threshold,
            tp.packing == "documents",
            cfg.progress,
        ),  # fmt: skip
        taskpt_data={m: TaskptDataRecipe(m, **{k: getattr(tp, k) for k in data_keys}, seed=seed) for m in tp.methods},
        probe=ProbeRecipe(g.probe_sentences, tp.max_length, cfg.mixed_precision),
    )


@dataclass(frozen=True)
class FinetuneJob:
    """One fine-tuning run of notebook 01: checkpoint ``taskpt_steps`` of ``method``'s TaskPT run at GenePT
    budget ``genept_steps`` (``method="genept"``: the GenePT checkpoint itself), fine-tuned with ``seed``.
    ``final``: the row enters the accuracy table and the paired gaps (else only the steps curve)."""

    genept_steps: int
    method: str
    taskpt_steps: int
    seed: int
    final: bool

    @property
    def name(self) -> str:
        return f"finetune/g{self.genept_steps}_{self.method}_t{self.taskpt_steps}_s{self.seed}"


# ----------------------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class GeneptDataRecipe:
    """GenePT's packed rows: the general corpus less the 10% held out for the MLM probe."""

    corpus: str
    max_sentences: int
    max_length: int
    seed: int
    tokenizer: str

    name = "genept_data"

    def key(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BufferRecipe:
    """The buffer method's importance labels of the labelled task's train (capped) and dev texts."""

    buffer: Any  # BufferStageConfig
    task: TaskRecipe
    seed: int
    progress: bool = True

    name = "buffer"

    def key(self) -> dict:
        key = {k: v for k, v in asdict(self.buffer).items() if k != "rules_sentences"}  # not a property of labels
        return {"buffer": key, "task": self.task.key()}


@dataclass(frozen=True)
class RulesRecipe:
    """The effect of each non-official buffer option on the labels of the first ``rules_sentences`` sentences."""

    buffer: Any  # BufferStageConfig
    variants: tuple  # RULE_VARIANTS, each a tuple of (option, value)
    task: TaskRecipe
    seed: int

    name = "buffer_rules"

    def key(self) -> dict:
        return {"buffer": asdict(self.buffer), "variants": [dict(v) for v in self.variants], "task": self.task.key()}


@dataclass(frozen=True)
class TaggerRecipe:
    """The token tagger trained on the buffer labels (from ``tagger.model``, or GenePT's last checkpoint)."""

    tagger: Any  # TaggerConfig
    train: Any  # TrainConfig
    max_length: int
    batch_size: int
    seed: int

    name = "tagger"

    def key(self) -> dict:
        labelling = ("threshold", "stopwords")  # options of the corpus labels (CorpusRecipe), not of the tagger
        tagger = {k: v for k, v in asdict(self.tagger).items() if k not in labelling}
        return {"tagger": tagger, "max_length": self.max_length, "batch_size": self.batch_size}


@dataclass(frozen=True)
class CorpusRecipe:
    """The TaskPT corpus labelled by the tagger."""

    corpus: str
    max_sentences: int
    max_length: int
    stopwords: str
    seed: int
    threshold: str
    documents: bool
    progress: bool = True

    name = "corpus_labels"

    def key(self) -> dict:
        key = {k: getattr(self, k) for k in ("corpus", "max_sentences", "max_length", "stopwords", "seed")}
        key["threshold"] = self.threshold
        if self.documents:
            key["documents"] = True  # capped by whole documents, each row with its document
        return key


@dataclass(frozen=True)
class TaskptDataRecipe:
    """TaskPT's rows for ``method``: the labelled corpus split into train and held-out dev rows, packed, with the
    method's masks drawn once under ``masks="static"`` (one shared data stage under ``"dynamic"``)."""

    method: str
    max_length: int
    dev_fraction: float
    packing: str
    short_seq_prob: float
    masks: str
    max_predictions: int
    fallback: str
    mask_positions: str
    rank: str
    seed: int

    @property
    def name(self) -> str:
        return f"taskpt_data_{self.method}" if self.masks == "static" else "taskpt_data"

    @property
    def per_sentence(self) -> bool:
        """Masks drawn per whole sentence before packing (official): static selective or random masks."""
        return self.masks == "static" and self.mask_positions == "sentence" and self.method in ("selective", "random")

    def key(self) -> dict:
        keys = ("max_length", "dev_fraction", "packing", "short_seq_prob", "masks", "max_predictions", "fallback")
        return {
            **{k: getattr(self, k) for k in keys},
            "method": self.method if self.masks == "static" else None,
            "mask_positions": self.mask_positions if self.per_sentence else "row",
            "rank": self.rank,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ProbeRecipe:
    """Held-out MLM loss and top-1 of every GenePT budget and selected TaskPT checkpoint, general and in-domain."""

    sentences: int
    max_length: int
    mixed_precision: str

    name = "probe"

    def key(self) -> dict:
        return {"sentences": self.sentences, "max_length": self.max_length}


# ----------------------------------------------------------------------------------------- stage factories


def genept_data_stage(recipe: GeneptDataRecipe, texts: Callable[[], list[str]], tokenizer) -> Stage[MLMData]:
    """Stage ``genept_data``: ``texts()`` (the general corpus) less its probe rows, packed."""

    def build(ctx):
        from tmlib.selective.mlm import pack_corpus

        all_texts = texts()
        train_idx, _ = split_corpus(all_texts, 0.1, recipe.seed)
        return MLMData(pack_corpus([all_texts[i] for i in train_idx], tokenizer, recipe.max_length))

    return Stage(recipe.name, recipe.key(), build, _save_mlm_data, _load_mlm_data, seed=recipe.seed)


def buffer_stage(recipe: BufferRecipe, scorer: Stage, task, tokenizer) -> Stage[BufferLabels]:
    """Stage ``buffer``: the scorer's buffer-method labels of ``task``'s train (capped) and dev texts."""
    b = recipe.buffer

    def build(ctx, scorer):
        import torch

        from tmlib.core.models import load_saved_classifier
        from tmlib.selective.buffer import buffer_importance, document_sentences

        start = time.perf_counter()
        model = load_saved_classifier(scorer.model_dir)
        bcfg = b.rule(progress=recipe.progress)
        out, counts = {}, {}
        for split in ("train", "dev"):
            ds = task[split]
            if split == "train" and b.max_sentences:
                ds = ds.select(range(min(b.max_sentences, len(ds))))
            texts, labels = list(ds["text"]), list(ds["label"])
            # [CLS] aspect [SEP] buffer [SEP]; an aspect task's (sentence, aspect) rows are scored whole
            aspects = list(ds[ASPECT_COLUMN]) if second_column(ds) == ASPECT_COLUMN else None
            if b.sentences == "spacy" and aspects is None:
                texts, labels, _ = document_sentences(texts, labels)
            counts[split] = {"texts": len(ds), "sentences": len(texts)}
            ctx.log(f"{split}: {len(texts)} sentences from {len(ds)} texts")
            with torch.inference_mode():
                out[split] = buffer_importance(model, tokenizer, texts, labels, bcfg, aspects=aspects, report=ctx.log)
        # each tested token is one candidate row of ~n/2 + 3 tokens; approximate the forward FLOPs
        cand = sum(len(s.tokens) * (len(s.tokens) / 2 + 3) for v in out.values() for s in v if s.correct)
        full = sum(len(s.tokens) + 2 for v in out.values() for s in v)
        stats = {
            "seconds": time.perf_counter() - start,
            "counts": counts,
            "flops": forward_flops(_encoder_params(model), cand + full),
        }
        return {k: [_score_row(s) for s in v] for k, v in out.items()}, stats

    return Stage(recipe.name, recipe.key(), build, _save_buffer, _load_buffer, deps={"scorer": scorer},
                 seed=recipe.seed)  # fmt: skip


def _save_buffer(obj, d: Path) -> None:
    _write_json(d / "labels.json", obj[0])
    _write_json(d / "stats.json", obj[1])


def _load_buffer(d: Path) -> BufferLabels:
    rows = _read_json(d / "labels.json")
    return BufferLabels({k: [_score_from_row(r) for r in v] for k, v in rows.items()}, _read_json(d / "stats.json"))


def rules_stage(recipe: RulesRecipe, scorer: Stage, task, tokenizer) -> Stage:
    """Stage ``buffer_rules``: each non-official buffer option against the official rule (first token kept;
    tmlib's or no stop list; spaCy's list on whole words), on the first ``buffer.rules_sentences`` train texts."""
    b = recipe.buffer

    def build(ctx, scorer):
        import torch

        from tmlib.core.models import load_saved_classifier
        from tmlib.selective.buffer import compare_rule_variants

        model = load_saved_classifier(scorer.model_dir)
        ds = task["train"].select(range(min(b.rules_sentences, len(task["train"]))))
        base = b.rule(progress=False)
        variants = [dict(v) for v in recipe.variants]
        todo = [v for v in variants if not all(getattr(base, k) == val for k, val in v.items())]
        with torch.inference_mode():  # one walk per distinct rule (2 for the four variants), not one per row
            return compare_rule_variants(
                model,
                tokenizer,
                list(ds["text"]),
                list(ds["label"]),
                base,
                todo,
                aspects=list(ds[ASPECT_COLUMN]) if second_column(ds) == ASPECT_COLUMN else None,
            )

    return Stage(recipe.name, recipe.key(), build, _save_rules, _load_rules, deps={"scorer": scorer},
                 seed=recipe.seed)  # fmt: skip


def _save_rules(df: pd.DataFrame, d: Path) -> None:
    df.to_csv(d / "rules.csv", index=False)


def _load_rules(d: Path) -> pd.DataFrame:
    return pd.read_csv(d / "rules.csv")


def tagger_stage(recipe: TaggerRecipe, buffer: Stage, genept: Stage | None, tokenizer) -> Stage[SavedModel]:
    """Stage ``tagger``: the token tagger trained on the buffer labels (``genept``: start from GenePT's last
    checkpoint instead of ``tagger.model``)."""
    t = recipe.tagger

    def build(ctx, buffer, genept=None):
        from tmlib.core.models import load_token_classifier
        from tmlib.core.training import fit
        from tmlib.selective.tagger import ImportanceTagging

        start = time.perf_counter()
        init = str(genept.model_dir) if genept is not None else t.model
        model = load_token_classifier(init, num_labels=2, seed=recipe.seed)
        train, dev = tagger_split(buffer.scores, t.dev)
        res = fit(
            model, train, recipe.train, ImportanceTagging(tokenizer, dev, class_weight=t.class_weight), desc="tagger"
        )
        n_tok = sum(len(s.tokens) + 2 for s in train)
        return model, {
            "seconds": time.perf_counter() - start,
            "dev": res.dev,
            "history": res.fit.history,
            "positive_rate": res.positive_rate,
            "n_train": res.n_train,
            "flops": train_flops(_encoder_params(model), n_tok, t.epochs),
        }

    deps = {"buffer": buffer} if genept is None else {"buffer": buffer, "genept": genept}
    return Stage(recipe.name, recipe.key(), build, _save_tagger, _load_tagger, deps=deps, seed=recipe.seed)


def tagger_split(scores: dict, dev: str) -> tuple[list, list]:
    """The tagger's train and dev buffer labels: ``dev="buffer_tail"`` the first 90% and the last 10% of the train
    split's labels (official merge_pkl.py, ``dev_rate`` 0.1), ``"task_dev"`` the train and the dev split's."""
    if dev == "task_dev":
        return list(scores["train"]), list(scores["dev"])
    train = list(scores["train"])
    cut = int(0.9 * len(train))
    if cut == 0 or cut == len(train):
        raise ValueError(
            f"tagger.dev 'buffer_tail' needs at least 2 train sentences with buffer labels, got {len(train)}; "
            "raise buffer.max_sentences or set tagger_dev: task_dev"
        )
    return train[:cut], train[cut:]


def _save_tagger(obj, d: Path) -> None:
    obj[0].save_pretrained(d / "model")
    _write_json(d / "stats.json", obj[1])


def _load_tagger(d: Path) -> SavedModel:
    return SavedModel(d / "model", _read_json(d / "stats.json"))


def corpus_stage(recipe: CorpusRecipe, tagger: Stage, corpus: Callable[[], Any], tokenizer, processes=None) -> Stage:
    """Stage ``corpus_labels``: ``corpus()`` (the TaskPT corpus) labelled by the tagger, and its stats.
    ``processes`` (:func:`tmlib.core.precision.processes`): under a multi-process launch every process runs the build
    and labels a share of the batches (the builder inside the stage, the others beside it); the result is the
    one-process result, and the key and code the same."""

    def build(ctx, tagger):
        return labelled_corpus(recipe, tagger, corpus(), tokenizer, processes)

    return Stage(recipe.name, recipe.key(), build, _save_corpus, _load_corpus, deps={"tagger": tagger},
                 seed=recipe.seed)  # fmt: skip


def labelled_corpus(recipe: CorpusRecipe, tagger: SavedModel, corpus, tokenizer, processes=None):
    """``corpus`` labelled by ``tagger`` (its dev-tuned threshold, or the official argmax) and its stats."""
    from tmlib.core.models import load_token_classifier
    from tmlib.selective.tagger import label_corpus as label

    start = time.perf_counter()
    model = load_token_classifier(str(tagger.model_dir), num_labels=2)
    threshold = 0.5 if recipe.threshold == "argmax" else None  # None: the dev-tuned one it saved
    ds = label(
        model,
        tokenizer,
        list(corpus["text"]),
        max_length=recipe.max_length,
        stopwords=recipe.stopwords,
        progress=recipe.progress,
        threshold=threshold,
        processes=processes if processes is not None and processes.num_processes > 1 else None,
    )
    if "doc" in corpus.column_names:
        ds = ds.add_column("doc", list(corpus["doc"]))
    n_tok = sum(len(x) + 2 for x in ds["token_ids"])
    return ds, {
        "seconds": time.perf_counter() - start,
        "flops": forward_flops(_encoder_params(model), n_tok),
        "sentences": len(ds),
        "tokens": n_tok,
    }


def _save_corpus(obj, d: Path) -> None:
    obj[0].save_to_disk(str(d / "data"))
    _write_json(d / "stats.json", obj[1])


def _load_corpus(d: Path):
    from datasets import Dataset

    return Dataset.load_from_disk(str(d / "data"))


def taskpt_data_stage(recipe: TaskptDataRecipe, corpus: Stage, split: Callable, tokenizer) -> Stage[MLMData]:
    """Stage ``taskpt_data[_<method>]``: the labelled corpus split (``split(corpus)`` -> train and dev rows),
    packed (``packing``), with the method's masks drawn once under ``masks="static"``."""

    def build(ctx, corpus):
        from tmlib.selective.collators import sentence_masks
        from tmlib.selective.mlm import draw_static_masks, pack_corpus, pack_documents

        train_idx, dev_idx = split(corpus)

        def pack(idx, seed):
            sub = corpus.select(idx)
            token_fields = {
                "importance": list(sub[score_column(sub, recipe.rank)]),
                "important": list(sub["important"]),
            }
            if recipe.per_sentence:  # official: each sentence's masks drawn before packing and trimming
                fallback = None if recipe.fallback == "none" else recipe.fallback
                token_fields["drawn"] = sentence_masks(
                    token_fields["importance"], token_fields["important"], recipe.method, fallback=fallback, seed=seed
                )
            if recipe.packing == "documents":
                return pack_documents(
                    list(sub["token_ids"]),
                    list(sub["doc"]),
                    tokenizer,
                    recipe.max_length,
                    short_seq_prob=recipe.short_seq_prob,
                    seed=recipe.seed,
                    token_fields=token_fields,
                )
            return pack_corpus(
                None, tokenizer, recipe.max_length, token_ids=list(sub["token_ids"]), token_fields=token_fields
            )

        train, dev = pack(train_idx, recipe.seed), pack(dev_idx, 12345)
        if recipe.masks == "static":  # drawn once, as the official data files are written
            train = draw_static_masks(
                train,
                collator(recipe.method, tokenizer, seed=recipe.seed, fallback=recipe.fallback),
                recipe.max_predictions,
                seed=recipe.seed,
            )
            dev = draw_static_masks(
                dev,
                collator(recipe.method, tokenizer, seed=12345, fallback=recipe.fallback),
                recipe.max_predictions,
                seed=12345,
            )
        return MLMData(train, dev)

    return Stage(
        recipe.name, recipe.key(), build, _save_mlm_data, _load_mlm_data, deps={"corpus": corpus}, seed=recipe.seed
    )


def score_column(corpus, rank: str) -> str:
    """The labelled corpus's column that ranks important tokens under the cap: the raw class-1 logit (``rank``
    "logit", official) or P(important); a corpus labelled before the logit was kept has P only."""
    if rank == "logit" and "importance_logit" not in corpus.column_names:
        raise ValueError(
            "this labelled corpus has no importance_logit column (labelled by an older tmlib); relabel it, or rank "
            "by P(important) with taskpt_rank: probability"
        )
    return "importance_logit" if rank == "logit" else "importance"


def probe_stage(recipe: ProbeRecipe, genept: Stage, taskpt: dict[str, Stage], texts: Callable, tokenizer) -> Stage:
    """Stage ``probe``: every GenePT budget's and selected TaskPT checkpoint's MLM loss and top-1 on ``texts()``
    (held-out general and in-domain sentences); ``taskpt``: ``t_<G>_<method>`` -> its run's stage."""

    def build(ctx, genept, **taskpt):
        from tmlib.core.models import load_mlm
        from tmlib.selective.mlm import mlm_probe

        general, indomain = texts()
        rows = []
        ckpts = [("genept", g, "genept", 0, genept.checkpoint(g)) for g in genept.stats["steps"]]
        for key, run in taskpt.items():
            _, g, m = key.split("_", 2)
            ckpts.append(("taskpt", int(g), m, run.selected, run.checkpoint(run.selected)))
        for stage, g, m, t, path in ckpts:
            model = load_mlm(str(path))
            for domain, sents in (("general", general), ("in-domain", indomain)):
                res = mlm_probe(
                    model,
                    tokenizer,
                    sents,
                    max_length=recipe.max_length,
                    seed=0,
                    mixed_precision=recipe.mixed_precision,
                )
                rows.append(
                    {
                        "stage": stage,
                        "genept_steps": g,
                        "method": m,
                        "taskpt_steps": t,
                        "domain": domain,
                        "loss": res["loss"],
                        "top1": res["top1"],
                        "n_masked": res["n_masked"],
                    }
                )
            ctx.log(f"probe {stage} g{g} {m}: in-domain top-1 {rows[-1]['top1']:.3f}")
        return pd.DataFrame(rows)

    return Stage(recipe.name, recipe.key(), build, _save_probe, _load_probe, deps={"genept": genept, **taskpt})


def _save_probe(df: pd.DataFrame, d: Path) -> None:
    df.to_csv(d / "probe.csv", index=False)


def _load_probe(d: Path) -> pd.DataFrame:
    return pd.read_csv(d / "probe.csv")


# ----------------------------------------------------------------------------------------- experiment


class Experiment:
    """Notebook 01 on one run folder: its plan, the one :class:`~tmlib.core.runs.RunStore` of ``cfg.out_dir``, the
    task data loaded once, and one method per stage (``*_stage()``, each from its recipe through its factory) and
    per value (``genept()``, ``probe()``, ``finetune()``, ...)."""

    def __init__(self, cfg: SelectiveConfig, scope: str = ""):
        """``scope``: a folder prefix of the TaskPT runs and of the fine-tuning runs that start from them (a budget
        run of :meth:`budget_experiment` beside the notebook's own); everything upstream is shared."""
        from tmlib.core.models import load_tokenizer
        from tmlib.core.runtime import set_threads

        self.cfg = cfg
        self.scope = scope
        self.plan = plan(cfg)
        self.threads = set_threads(cfg.threads)
        self.store = RunStore(cfg.out_dir, progress=cfg.progress)
        self.tokenizer = load_tokenizer(self.plan.genept_data.tokenizer)
        self.task = self.plan.task.load()
        separate = cfg.test_pool != "split" or cfg.max_test or cfg.finetune.max_train
        self.finetune_data = self.plan.finetune_task.load() if separate else self.task
        self._stages: dict[str, Stage] = {}  # name -> stage: each stage object made once (its fingerprint too)

    # ------------------------------------------------------------------------------ helpers
    def get(self, stage: Stage):
        return self.store.get(stage)

    def _once(self, name: str, make: Callable[[], Stage]) -> Stage:
        if name not in self._stages:
            self._stages[name] = make()
        return self._stages[name]

    def _corpus_texts(self, name: str, max_sentences: int) -> list[str]:
        from tmlib.tasks.data import load_corpus

        return list(load_corpus(name, max_sentences=max_sentences or None, seed=self.cfg.pretrain_seed)["text"])

    def genept_texts(self) -> list[str]:
        g = self.cfg.genept
        return self._corpus_texts(g.corpus, g.max_sentences)

    def taskpt_corpus(self):
        """The in-domain corpus TaskPT trains on (``text``; with ``taskpt.packing="documents"`` also ``doc``,
        capped by whole documents)."""
        from tmlib.tasks.data import load_corpus

        tp = self.cfg.taskpt
        return load_corpus(
            tp.corpus,
            max_sentences=tp.max_sentences or None,
            seed=self.cfg.pretrain_seed,
            documents=tp.packing == "documents",
        )

    def taskpt_split(self, corpus) -> tuple[list[int], list[int]]:
        """(train, dev) rows of the TaskPT corpus; by document under ``packing="documents"``."""
        docs = list(corpus["doc"]) if "doc" in corpus.column_names else None
        return split_corpus(list(corpus["text"]), self.cfg.taskpt.dev_fraction, self.cfg.pretrain_seed, docs)

    def genept_probe_texts(self) -> tuple[list[str], list[str]]:
        """Held-out general sentences (never in GenePT) and in-domain ones (the TaskPT dev rows)."""
        gen = self.genept_texts()
        _, gen_dev = split_corpus(gen, 0.1, self.cfg.pretrain_seed)
        corpus = self.taskpt_corpus()
        ind = list(corpus["text"])
        _, ind_dev = self.taskpt_split(corpus)
        n = self.cfg.genept.probe_sentences
        return [gen[i] for i in gen_dev][:n], [ind[i] for i in ind_dev][:n]

    # ------------------------------------------------------------------------------ stages
    def genept_data_stage(self) -> Stage[MLMData]:
        return self._once("genept_data", lambda: genept_data_stage(self.plan.genept_data, self.genept_texts,
                                                                   self.tokenizer))  # fmt: skip

    def genept_stage(self) -> Stage[Checkpoints]:
        g = self.cfg.genept
        if g.checkpoints:  # published under-trained checkpoints (MultiBERTs): nothing to train here
            return self._once("genept", lambda: published_stage(PublishedRecipe(tuple(g.steps), tuple(g.checkpoints))))
        return self._once("genept", lambda: mlm_run_stage("genept", self.plan.genept, self.genept_data_stage(),
                                                          g.model, self.tokenizer, progress=self.cfg.progress,
                                                          desc="GenePT"))  # fmt: skip

    def scorer_stage(self) -> Stage:
        init = self.genept_stage() if self.cfg.scorer.model == "genept" else self.cfg.scorer.model
        return self._once("scorer", lambda: classifier_stage("scorer", init, self.plan.task, self.plan.scorer,
                                                             data=self.task, tokenizer=self.tokenizer,
                                                             desc="scorer"))  # fmt: skip

    def buffer_stage(self) -> Stage[BufferLabels]:
        return self._once("buffer", lambda: buffer_stage(self.plan.buffer, self.scorer_stage(), self.task,
                                                         self.tokenizer))  # fmt: skip

    def rules_stage(self) -> Stage:
        return self._once("buffer_rules", lambda: rules_stage(self.plan.rules, self.scorer_stage(), self.task,
                                                              self.tokenizer))  # fmt: skip

    def tagger_stage(self) -> Stage[SavedModel]:
        genept = self.genept_stage() if self.cfg.tagger.model == "genept" else None
        return self._once("tagger", lambda: tagger_stage(self.plan.tagger, self.buffer_stage(), genept,
                                                         self.tokenizer))  # fmt: skip

    def corpus_stage(self, processes=None) -> Stage:
        """The labelled TaskPT corpus; ``processes``: label it across a multi-process launch (same key and code)."""
        make = lambda: corpus_stage(self.plan.corpus, self.tagger_stage(), self.taskpt_corpus, self.tokenizer,
                                    processes)  # fmt: skip
        return make() if processes is not None else self._once("corpus_labels", make)

    def taskpt_data_stage(self, method: str) -> Stage[MLMData]:
        r = self.plan.taskpt_data[method]
        return self._once(r.name, lambda: taskpt_data_stage(r, self.corpus_stage(), self.taskpt_split,
                                                            self.tokenizer))  # fmt: skip

    def taskpt_stage(self, genept_step: int, method: str) -> Stage[Checkpoints]:
        if genept_step not in self.cfg.genept.steps:
            raise KeyError(f"GenePT budget {genept_step} is not in genept.steps {self.cfg.genept.steps}")
        name = f"{self.scope}taskpt_g{genept_step}_{method}"
        return self._once(name, lambda: mlm_run_stage(name, self.plan.taskpt[method], self.taskpt_data_stage(method),
                                                      self.genept_stage(), self.tokenizer, init_step=genept_step,
                                                      progress=self.cfg.progress,
                                                      desc=f"TaskPT {method} (GenePT {genept_step})"))  # fmt: skip

    def probe_stage(self) -> Stage:
        cfg = self.cfg
        taskpt = {f"t_{g}_{m}": self.taskpt_stage(g, m) for g in cfg.genept.steps for m in cfg.taskpt.methods}
        return self._once("probe", lambda: probe_stage(self.plan.probe, self.genept_stage(), taskpt,
                                                       self.genept_probe_texts, self.tokenizer))  # fmt: skip

    def finetune_stage(self, job: FinetuneJob) -> Stage:
        """The fine-tuning stage of one job of :meth:`finetune_jobs`."""
        from dataclasses import replace

        if job.method == "genept":
            init, pick = self.genept_stage(), job.genept_steps
        else:
            init, pick = self.taskpt_stage(job.genept_steps, job.method), job.taskpt_steps
        n = self.cfg.finetune.max_train  # runs on another training-set size live beside the default ones
        name = job.name.replace("finetune/", f"finetune/n{n}/", 1) if n else job.name
        if job.method != "genept":
            name = self.scope + name
        return self._once(name, lambda: classifier_stage(
            name, init, self.plan.finetune_task, replace(self.plan.finetune, seed=job.seed), data=self.finetune_data,
            tokenizer=self.tokenizer, pick=pick, desc=f"fine-tune s{job.seed}",
            test_mixed_precision=self.cfg.eval_mixed_precision))  # fmt: skip

    # ------------------------------------------------------------------------------ values
    def genept(self) -> Checkpoints:
        return self.get(self.genept_stage())

    def taskpt(self) -> dict[tuple[int, str], Checkpoints]:
        return {
            (g, m): self.get(self.taskpt_stage(g, m)) for g in self.cfg.genept.steps for m in self.cfg.taskpt.methods
        }

    def probe(self) -> pd.DataFrame:
        return self.get(self.probe_stage())

    def finetune_jobs(self) -> list[FinetuneJob]:
        """Every fine-tuning run: GenePT-only and the selected TaskPT checkpoint of every budget and
        method with ``seeds + extra_seeds`` (the table and the paired gaps), and the curve's other
        TaskPT checkpoints with ``seeds`` only. Asks for the TaskPT runs (their selected checkpoints)."""
        cfg = self.cfg
        curve_budgets = cfg.genept.steps if cfg.curve_all_budgets else [min(cfg.genept.steps)]
        seeds = cfg.seeds + cfg.extra_seeds
        jobs = []
        for g in cfg.genept.steps:
            jobs += [FinetuneJob(g, "genept", 0, s, final=True) for s in seeds]
            for m in cfg.taskpt.methods:
                sel = self.get(self.taskpt_stage(g, m)).selected
                jobs += [FinetuneJob(g, m, sel, s, final=True) for s in seeds]
                if g in curve_budgets:
                    jobs += [
                        FinetuneJob(g, m, t, s, final=False) for t in cfg.taskpt.steps if t != sel for s in cfg.seeds
                    ]
        return jobs

    def predictions(self) -> dict:
        """``(genept_steps, method, seed) -> predicted test classes`` of every final fine-tuning run (the paired
        gaps' test-sampling term)."""
        return {
            (j.genept_steps, j.method, j.seed): self.get(self.finetune_stage(j)).predictions
            for j in self.finetune_jobs()
            if j.final
        }

    def finetune(self) -> pd.DataFrame:
        """One row per fine-tuning run (``final``: the row enters the accuracy table and the gaps)."""
        from tqdm.auto import tqdm

        rows = []
        for j in tqdm(self.finetune_jobs(), desc="fine-tune runs", disable=not self.cfg.progress):
            m = self.get(self.finetune_stage(j)).metrics
            rows.append(
                {
                    "genept_steps": j.genept_steps,
                    "method": j.method,
                    "taskpt_steps": j.taskpt_steps,
                    "seed": j.seed,
                    "final": j.final,
                    "dev_accuracy": m["dev_accuracy"],
                    "test_accuracy": m["test_accuracy"],
                    "test_n": m.get("test_n"),
                    "best_epoch": m["best_epoch"],
                    "seconds": m["seconds"],
                }
            )
        df = pd.DataFrame(rows)
        df["failed"] = flag_failed(df, self.task["dev"]["label"])
        return df

    def run(self, reverse: bool = False) -> pd.DataFrame:
        """Build (or load) every TaskPT and fine-tuning stage, in order or in ``reverse`` order (a second process
        sharing the work: each stage's file lock keeps anything from being built twice), and return
        :meth:`finetune`'s table."""
        order = (lambda xs: list(reversed(xs))) if reverse else list
        for g in order(self.cfg.genept.steps):
            for m in order(self.cfg.taskpt.methods):
                self.get(self.taskpt_stage(g, m))
        for j in order(self.finetune_jobs()):
            self.get(self.finetune_stage(j))
        return self.finetune()

    # ------------------------------------------------------------------------------ the budget curve
    def budget_experiment(self, budget: int) -> Experiment:
        """This experiment with one TaskPT run of ``budget`` steps per method: its own warmup and decay over those
        steps, one checkpoint (its last step: the rule of the budget curve), everything upstream shared through
        the same run folder."""
        from dataclasses import replace

        if self.cfg.taskpt.steps == [budget]:  # the notebook's own TaskPT runs are this budget's: no second copy
            return self
        taskpt = replace(self.cfg.taskpt, steps=[budget], budgets=[])
        return Experiment(replace(self.cfg, taskpt=taskpt), scope=f"budgets/t{budget}/")

    def budget_results(self, reverse: bool = False) -> tuple[pd.DataFrame, dict]:
        """Every budget of ``taskpt.budgets`` run and fine-tuned (the final runs only): one row per run with its
        ``taskpt_budget`` (GenePT-only rows repeat under each budget, their pairs), and the predictions keyed
        ``(genept_steps, taskpt_budget, method, seed)``."""
        budgets = list(reversed(self.cfg.taskpt.budgets)) if reverse else self.cfg.taskpt.budgets
        frames, preds = [], {}
        for b in budgets:
            sub = self.budget_experiment(b)
            res = sub.run(reverse)
            rows = len(sub.get(sub.taskpt_data_stage(self.cfg.taskpt.methods[0])).train)
            passes = b * self.cfg.taskpt.batch_size / rows  # passes over the TaskPT train rows
            frames.append(res[res["final"]].assign(taskpt_budget=b, taskpt_passes=round(passes, 2)))
            preds.update({(g, b, m, s): p for (g, m, s), p in sub.predictions().items()})
        results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return results, preds

    def label_corpus(self, tagger: SavedModel, processes=None):
        """The TaskPT corpus labelled by ``tagger`` (the build of :meth:`corpus_stage`, for the processes of a
        multi-process launch that label beside the builder)."""
        return labelled_corpus(self.plan.corpus, tagger, self.taskpt_corpus(), self.tokenizer, processes)

    def write(self, results: pd.DataFrame, budgets: tuple[pd.DataFrame, dict] | None = None) -> dict[str, Path]:
        """results.csv (per run), summary.csv (mean/std + pre-training compute), gaps.csv (paired by seed, the
        primary tests Holm-corrected), steps.csv (curve), probe.csv (MLM probe per checkpoint), compute.json,
        tagger.json, config.json; with ``budgets`` (:meth:`budget_results`) budget_results.csv and budget_gaps.csv."""
        cfg, store = self.cfg, self.store
        compute = self.compute_rows(results)
        summary = summarize(results).merge(
            condition_costs(compute, cfg.genept.steps, cfg.taskpt.methods), on=["genept_steps", "method"], how="left"
        )
        curve = curve_rows(cfg, results)
        preds = self.predictions()
        gaps = with_holm(
            pd.concat(
                [
                    paired_gaps(results, predictions=preds).assign(runs="all"),
                    paired_gaps(results, drop_failed=True, predictions=preds).assign(runs="failed dropped"),
                ]
            )
        )
        tagger = self.get(self.tagger_stage()).stats
        out = {}
        if budgets is not None:
            out["budget_results"] = store.write_csv("budget_results.csv", budgets[0])
            out["budget_gaps"] = store.write_csv("budget_gaps.csv", budget_gaps(*budgets))
        return out | {
            "results": store.write_csv("results.csv", results),
            "summary": store.write_csv("summary.csv", summary),
            "gaps": store.write_csv("gaps.csv", gaps),
            "steps": store.write_csv("steps.csv", curve),
            "steps_summary": store.write_csv("steps_summary.csv", curve_summary(curve)),
            "probe": store.write_csv("probe.csv", self.probe()),
            "taskpt_selection": store.write_csv("taskpt_selection.csv", taskpt_selection(self)),
            "compute": store.write_json("compute.json", compute_split(compute, self.threads)),
            "tagger": store.write_json("tagger.json", {k: v for k, v in tagger.items() if k != "history"}),
            "config": store.write_json("config.json", asdict(cfg)),
        }

    # ------------------------------------------------------------------------------ compute
    def compute_rows(self, results: pd.DataFrame | None = None) -> pd.DataFrame:
        """Seconds (measured when built) and FLOP estimates per stage; loaded stages report their build."""
        cfg = self.cfg
        rows = []
        gen = self.genept()
        prev_step, prev_sec = 0, 0.0
        for step in cfg.genept.steps:  # one run: each budget's stage is the steps since the previous budget
            sec = float(gen.stats["saved"][step]["seconds"])
            rows.append(
                {
                    "stage": f"GenePT steps {prev_step}-{step}",
                    "group": "GenePT",
                    "seconds": sec - prev_sec,
                    "flops": train_flops(gen.stats["params"], gen.stats["tokens_per_step"], step - prev_step),
                    "steps": step,
                }
            )
            prev_step, prev_sec = step, sec
        scorer = self.get(self.scorer_stage()).metrics
        n_tok = sum(
            len(x)
            for x in self.tokenizer(
                list(self.task["train"]["text"]), truncation=True, max_length=cfg.finetune.max_length
            )["input_ids"]
        )
        rows.append(
            {
                "stage": "scorer fine-tune",
                "group": "importance",
                "seconds": scorer["seconds"],
                "flops": train_flops(gen.stats["params"], n_tok, cfg.scorer.epochs),
            }
        )
        rows.append({"stage": "buffer labels", "group": "importance", **_sf(self.get(self.buffer_stage()).stats)})
        rows.append({"stage": "tagger training", "group": "importance", **_sf(self.get(self.tagger_stage()).stats)})
        corpus_stats = _read_json(self.store.folder("corpus_labels") / "stats.json")
        rows.append({"stage": "label corpus", "group": "importance", **_sf(corpus_stats)})
        for (g, m), run in self.taskpt().items():
            last = max(cfg.taskpt.steps)
            rows.append(
                {
                    "stage": f"TaskPT {m} (GenePT {g})",
                    "group": "TaskPT",
                    "seconds": run.stats["saved"][last]["seconds"],
                    "flops": train_flops(run.stats["params"], run.stats["tokens_per_step"], last),
                    "genept_steps": g,
                    "method": m,
                }
            )
        if results is not None:
            rows.append(
                {
                    "stage": "fine-tune (all runs)",
                    "group": "fine-tune",
                    "seconds": float(results["seconds"].sum()),
                    "flops": 0.0,
                }
            )
        return pd.DataFrame(rows)


Config = SelectiveConfig


def history(exp: Experiment) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MLM training-loss curves: (GenePT, TaskPT per budget and method, with held-out loss per checkpoint)."""
    gen = pd.DataFrame(exp.genept().stats["history"])
    rows = []
    for (g, m), run in exp.taskpt().items():
        rows += [{"genept_steps": g, "method": m, **h} for h in run.stats["history"]]
    return gen, pd.DataFrame(rows)


def taskpt_selection(exp: Experiment) -> pd.DataFrame:
    """Held-out MLM loss of every TaskPT checkpoint and which one was selected for fine-tuning."""
    rows = []
    for (g, m), run in exp.taskpt().items():
        for step, rec in sorted(run.stats["saved"].items()):
            rows.append(
                {
                    "genept_steps": g,
                    "method": m,
                    "taskpt_steps": step,
                    "dev_loss": rec["dev_loss"],
                    "selected": step == run.selected,
                }
            )
    return pd.DataFrame(rows)


def curve_rows(cfg: SelectiveConfig, results: pd.DataFrame) -> pd.DataFrame:
    """The runs behind the accuracy-vs-TaskPT-steps curve (the smallest budget unless curve_all_budgets)."""
    budgets = cfg.genept.steps if cfg.curve_all_budgets else [min(cfg.genept.steps)]
    return results[results["genept_steps"].isin(budgets) & results["seed"].isin(cfg.seeds)].reset_index(drop=True)


def _sf(stats: dict) -> dict:
    return {"seconds": float(stats["seconds"]), "flops": float(stats["flops"])}


def _score_row(s) -> dict:
    row = {
        "text": s.text,
        "tokens": s.tokens,
        "scores": np.asarray(s.scores).tolist(),
        "important": np.asarray(s.important).tolist(),
        "label": s.label,
        "pred": s.pred,
    }
    if s.meta.get("aspect") is not None:  # aspect tasks: the tagger merges one text's aspects (official)
        row["aspect"] = s.meta["aspect"]
    return row


def _score_from_row(r: dict):
    from tmlib.selective.types import TokenScores

    return TokenScores(
        text=r["text"],
        tokens=r["tokens"],
        scores=np.asarray(r["scores"]),
        important=r["important"],
        label=r["label"],
        pred=r["pred"],
        method="buffer",
        meta={"aspect": r["aspect"]} if "aspect" in r else {},
    )


def mlm_dev_loss(model, packed, collate, batch_size: int = 32) -> float:
    """Mean MLM loss (masked positions) on held-out packed rows under ``collate``'s masking; a fresh
    seeded collator gives the same masks at every checkpoint, so the losses are comparable."""
    import torch

    from tmlib.selective.mlm import MaskedOnlyMLM

    wrapped = MaskedOnlyMLM(model)
    was = model.training
    model.eval()
    rows = [
        {
            k: packed[i][k]
            for k in packed.column_names
            if k in ("input_ids", "attention_mask", "token_type_ids", "sent_ids", "importance", "important", "labels")
        }
        for i in range(len(packed))
    ]
    total, n = 0.0, 0
    with torch.inference_mode():
        for k in range(0, len(rows), batch_size):
            out = wrapped(**collate(rows[k : k + batch_size]))
            if out.n_masked:
                total += out.loss.item() * out.n_masked
                n += out.n_masked
    model.train(was)
    return total / max(1, n)


def collator(method: str, tokenizer, seed: int, fallback: str = "none"):
    """The TaskPT masking collator of ``method`` (selective | random | random15)."""
    from tmlib.selective.collators import PlainMLMCollator, RandomCountMaskingCollator, SelectiveMaskingCollator

    fb = None if fallback == "none" else fallback
    if method == "selective":
        return SelectiveMaskingCollator(tokenizer, fallback=fb, seed=seed)
    if method == "random":
        return RandomCountMaskingCollator(tokenizer, fallback=fb, seed=seed)
    if method == "random15":
        return PlainMLMCollator(tokenizer, mlm_probability=0.15, seed=seed)
    raise ValueError(f"unknown TaskPT masking method {method!r}; choose selective, random or random15")
