"""Selective masking for task-guided pre-training (Gu et al. 2020), the whole pipeline at small scale.

Stages (each a cached :class:`~tmlib.runs.RunStore` artifact keyed by the parameters it depends on,
so a rerun reuses every valid stage and rebuilds only what changed or is corrupt):

1. ``genept``        MLM pre-training on general text (BBC) from ``model`` (``scratch:<size>`` = from
                     scratch; ``minilm`` / ``bert-base-uncased`` / a directory = continue). ONE run of
                     ``max(genept_steps)`` steps, saving the model at every budget in ``genept_steps``:
                     the smaller ones are under-trained checkpoints, as the paper's 100k-of-a-longer-run.
2. ``scorer``        the largest GenePT checkpoint (or ``scorer`` = a model name) fine-tuned on the task.
3. ``buffer``        buffer-method labels (batched, :mod:`tmlib.importance.buffer`) on task train/dev sentences.
4. ``tagger``        importance tagger (:mod:`tmlib.importance.tagger`) trained on them, best dev F1.
5. ``corpus``        the tagger labels the unlabelled in-domain corpus (Pang&Lee review sentences).
6. ``taskpt_*``      for every GenePT budget and method: TaskPT MLM on that corpus, same budget for
                     every method: ``selective`` (tagger-guided), ``random`` (same masked COUNT per
                     sentence at random positions), optionally ``random15`` (HF's random 15%).
                     Checkpoints at every step in ``taskpt_steps`` (the accuracy-vs-steps curve).
7. ``finetune``      every checkpoint fine-tuned on the task with every seed; best epoch by dev
                     accuracy; the test accuracy of that epoch is reported (mean and std over seeds).

Compute per stage (seconds measured when built, and FLOP estimates from token counts:
6 * params * tokens for training, 2 * params * tokens for inference) goes to ``compute.json``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..runs import RunStore

METHODS = ("selective", "random", "random15")
PRETRAIN_SEED = 0           # seed of GenePT, scorer, tagger and TaskPT (fine-tuning seeds are a parameter)
TAGGER_CLASS_WEIGHT = 3.0   # loss weight of the "important" class (REFERENCE: ~3)
PROGRESS = True             # tqdm bars
FAILED_MARGIN = 0.05        # a run within this of the dev majority-class rate is flagged failed (~2 binomial std on 400 dev)
PRETRAINED_SCORER_LR = 2e-4  # a pretrained scorer (minilm, bert-base-uncased) is fine-tuned at most at this lr
                             # (a scratch config's 1e-3 wrecks MiniLM; 2e-4 x 2 epochs: MR test 73.3 +- 0.9 over 3 seeds)


@dataclass
class SelectiveConfig:
    out_dir: str = "runs/dev/01_selective_masking"   # where figures, CSV and JSON are written
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # fine-tuning seeds
    extra_seeds: list[int] = field(default_factory=list)  # more seeds, for the largest GenePT budget's final checkpoints only
    model: str = "scratch:mini"        # GenePT start: scratch:<size> (from scratch), minilm, bert-base-uncased, a dir
    genept_corpus: str = "bbc"         # general-text corpus for GenePT
    genept_steps: list[int] = field(default_factory=lambda: [100, 300])  # GenePT budgets (one run, checkpoints)
    genept_max_sentences: int = 0      # 0 = the whole corpus
    mlm_batch_size: int = 16           # GenePT and TaskPT batch size (packed rows)
    mlm_lr: float = 1e-3               # GenePT and TaskPT peak learning rate
    max_length: int = 64               # tokens per packed MLM row and per fine-tuning input
    task: str = "mr"                   # labelled task (tmlib.data.load_task name)
    task_max_examples: int = 1000      # cap per split (0 = all)
    scorer: str = "minilm"             # buffer-method scorer: "genept" (largest checkpoint) or a model name
    buffer_delta: float = 0.01         # buffer method threshold (official 0.01)
    buffer_max_sentences: int = 0      # task train sentences labelled by the buffer method (0 = all)
    tagger_model: str = "minilm"       # tagger init: "genept" (largest checkpoint) or a model name
    tagger_epochs: float = 2.0         # tagger training epochs (best by dev F1)
    tagger_lr: float = 1e-4            # tagger learning rate (decision threshold tuned on dev F1)
    taskpt_corpus: str = "pang_lee"    # unlabelled in-domain corpus for TaskPT
    taskpt_max_sentences: int = 4000   # sentences of it labelled and used (0 = all)
    taskpt_steps: list[int] = field(default_factory=lambda: [50, 100])  # TaskPT checkpoints; the last is the budget
    methods: list[str] = field(default_factory=lambda: ["selective", "random"])  # TaskPT masking methods
    fallback: str = "none"             # selective masking of sentences without important tokens: none | random
    curve_all_budgets: bool = False    # fine-tune intermediate TaskPT checkpoints for every budget (else the smallest)
    finetune_lr: float = 1e-3          # fine-tuning learning rate (paper: 2e-5 for BERT-base)
    finetune_batch_size: int = 32      # fine-tuning batch size
    finetune_epochs: float = 2.0       # fine-tuning epochs (best epoch by dev accuracy)

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("seeds is empty: give at least one fine-tuning seed, e.g. [0, 1, 2]")
        if set(self.extra_seeds) & set(self.seeds):
            raise ValueError(f"extra_seeds {self.extra_seeds} repeat seeds {self.seeds}; give seeds not in seeds")
        if not self.genept_steps or min(self.genept_steps) < 1:
            raise ValueError(f"genept_steps must be positive step counts, got {self.genept_steps}")
        if not self.taskpt_steps or min(self.taskpt_steps) < 1:
            raise ValueError(f"taskpt_steps must be positive step counts, got {self.taskpt_steps}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"unknown TaskPT method(s) {bad}; choose from {list(METHODS)}")
        if self.fallback not in ("none", "random"):
            raise ValueError(f"fallback must be 'none' (official) or 'random', got {self.fallback!r}")
        if self.max_length < 16:
            raise ValueError(f"max_length must be >= 16, got {self.max_length}")
        self.genept_steps = sorted(set(self.genept_steps))
        self.taskpt_steps = sorted(set(self.taskpt_steps))


# ------------------------------------------------------------------------------------------ helpers

class Compute:
    """Seconds and FLOP estimates per stage; loaded artifacts report what their build cost."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, stage: str, group: str, seconds: float, flops: float, **extra) -> None:
        self.rows = [r for r in self.rows if r["stage"] != stage]
        self.rows.append({"stage": stage, "group": group, "seconds": float(seconds), "flops": float(flops), **extra})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def _encoder_params(model) -> int:
    """Parameters touched per token (the embedding matrix is a lookup, not a matmul)."""
    emb = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - emb


def _save_model(model, d: Path, stats: dict) -> None:
    model.save_pretrained(d / "model")
    (d / "stats.json").write_text(json.dumps(stats, indent=2, default=float))


def _load_stats(d: Path) -> dict:
    return json.loads((d / "stats.json").read_text())


def _sub(cfg: SelectiveConfig, *names: str, **extra) -> dict:
    return {**{n: getattr(cfg, n) for n in names}, **extra}


def _train_cfg(cfg: SelectiveConfig, **kw):
    from ..training import TrainConfig

    base = dict(max_length=cfg.max_length, progress=PROGRESS, seed=PRETRAIN_SEED, group_by_length=True)
    base.update(kw)
    return TrainConfig(**base)


@dataclass
class Pipeline:
    """State shared by the stages of one notebook run."""

    cfg: SelectiveConfig
    store: RunStore
    tokenizer: Any
    task: Any
    compute: Compute = field(default_factory=Compute)
    genept_dirs: dict[int, Path] = field(default_factory=dict)
    scorer_dir: Path | None = None
    tagger_dir: Path | None = None
    buffer_scores: dict = field(default_factory=dict)
    tagger_metrics: dict = field(default_factory=dict)
    corpus: Any = None
    taskpt_dirs: dict = field(default_factory=dict)   # (genept_steps, method, taskpt_steps) -> dir


def adapt_threads() -> int:
    """Use one torch thread when the CPU is oversubscribed (load average >= cores).

    Measured on the shared 2-core machine at load ~7: with 2 OpenMP threads the small-matrix ops of
    these models spin-wait for a descheduled partner thread and ran 7-30x slower than with 1 thread
    (buffer importance: 27 s vs 0.95 s for the same 16 sentences). On an idle machine nothing changes.
    """
    import os

    import torch

    cores = os.cpu_count() or 1
    if hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores and torch.get_num_threads() > 1:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def _work_dir(p: Pipeline, name: str, conf: dict) -> Path:
    """Scratch directory of an MLM stage being built: its resumable ``checkpoint.pt`` and the models
    saved at intermediate budgets. Keyed by the stage config, so an interrupted build of the SAME
    config resumes from its last checkpoint and a changed config starts clean."""
    from ..config import config_hash

    return p.store.root / f".{name}_work" / config_hash(conf)[:12]


def _saver(work: Path, start: float):
    """``on_save`` hook: the model at a budget, and the seconds since this build (re)started."""
    def on_save(step: int, model) -> None:
        d = work / f"step_{step}"
        model.save_pretrained(d)
        (d / "seconds.json").write_text(json.dumps(time.perf_counter() - start))
    return on_save


def _move_steps(obj: dict, d: Path, steps) -> None:
    """Move the per-budget models from the work dir into artifact ``d`` and write ``stats.json``."""
    import shutil

    saved = {}
    for step in steps:
        src = obj["tmp"] / f"step_{step}"
        saved[step] = json.loads((src / "seconds.json").read_text())
        (src / "seconds.json").unlink()
        shutil.move(str(src), str(d / f"step_{step}"))
    shutil.rmtree(obj["tmp"].parent, ignore_errors=True)
    stats = {k: v for k, v in obj.items() if k != "tmp"}
    (d / "stats.json").write_text(json.dumps({**stats, "saved": saved}, default=float, indent=2))


def setup(cfg: SelectiveConfig) -> Pipeline:
    """Tokenizer, task data and the run store under ``cfg.out_dir`` (and :func:`adapt_threads`)."""
    from ..data import load_task
    from ..models import load_tokenizer

    adapt_threads()

    tok_name = cfg.model if not cfg.model.startswith("scratch:") else "minilm"
    tokenizer = load_tokenizer(tok_name)
    task = load_task(cfg.task, seed=0, max_examples=cfg.task_max_examples or None)
    return Pipeline(cfg, RunStore(cfg.out_dir), tokenizer, task)


# ------------------------------------------------------------------------------------------- GenePT

def run_genept(p: Pipeline) -> dict[int, Path]:
    """One GenePT run of ``max(genept_steps)`` steps; the model is saved at every budget."""
    from ..data import load_corpus
    from ..mlm import corpus_tokens, pack_corpus, train_mlm
    from ..models import load_mlm

    cfg = p.cfg
    conf = _sub(cfg, "model", "genept_corpus", "genept_steps", "genept_max_sentences", "mlm_batch_size", "mlm_lr",
                "max_length", )

    def build():
        start = time.perf_counter()
        corpus = load_corpus(cfg.genept_corpus, max_sentences=cfg.genept_max_sentences or None, seed=PRETRAIN_SEED)
        packed = pack_corpus(list(corpus["text"]), p.tokenizer, cfg.max_length)
        model = load_mlm(cfg.model, seed=PRETRAIN_SEED)
        tmp = _work_dir(p, "genept", conf)
        tcfg = _train_cfg(cfg, lr=cfg.mlm_lr, batch_size=cfg.mlm_batch_size, max_steps=max(cfg.genept_steps),
                          warmup_ratio=0.05, eval_every=max(1, max(cfg.genept_steps) // 10))
        res = train_mlm(model, packed, p.tokenizer, tcfg, save_at=cfg.genept_steps, on_save=_saver(tmp, start),
                        checkpoint_dir=tmp, desc="GenePT")
        tok_per_step = corpus_tokens(packed) / len(packed) * cfg.mlm_batch_size
        return {"tmp": tmp, "history": res.history, "tokens_per_step": tok_per_step,
                "params": _encoder_params(model), "rows": len(packed)}

    def save(obj, d: Path):
        _move_steps(obj, d, cfg.genept_steps)

    p.store.cached("genept", conf, build, save, lambda d: None, seed=PRETRAIN_SEED)
    d = p.store.root / "genept"
    stats = _load_stats(d)
    prev_step, prev_sec = 0, 0.0
    for step in cfg.genept_steps:  # one run: each budget's stage is the steps since the previous budget
        p.genept_dirs[step] = d / f"step_{step}"
        sec = stats["saved"][str(step)]
        p.compute.add(f"GenePT steps {prev_step}-{step}", "GenePT", sec - prev_sec,
                      6 * stats["params"] * stats["tokens_per_step"] * (step - prev_step), steps=step)
        prev_step, prev_sec = step, sec
    return p.genept_dirs


def genept_history(p: Pipeline) -> pd.DataFrame:
    return pd.DataFrame(_load_stats(p.store.root / "genept")["history"])


# --------------------------------------------------------------------------------- importance pipeline

def _resolve(p: Pipeline, name: str) -> str:
    return str(p.genept_dirs[max(p.genept_dirs)]) if name == "genept" else name


def run_scorer(p: Pipeline) -> dict:
    """Fine-tune the scorer (the classifier whose probabilities the buffer method reads)."""
    from ..data import label_names
    from ..models import load_classifier
    from ..training import train_classifier

    cfg = p.cfg
    lr = cfg.finetune_lr if cfg.scorer == "genept" else min(cfg.finetune_lr, PRETRAINED_SCORER_LR)
    conf = _sub(cfg, "scorer", "task", "task_max_examples", "finetune_epochs", "finetune_batch_size",
                "max_length", scorer_lr=lr, genept=_genept_key(p) if cfg.scorer == "genept" else None)

    def build():
        start = time.perf_counter()
        model = load_classifier(_resolve(p, cfg.scorer), label_names(p.task), seed=PRETRAIN_SEED)
        tcfg = _train_cfg(cfg, lr=lr, batch_size=cfg.finetune_batch_size, epochs=cfg.finetune_epochs)
        res = train_classifier(model, p.task, p.tokenizer, tcfg, desc="scorer")
        n_tok = sum(len(x) for x in p.tokenizer(list(p.task["train"]["text"]), truncation=True, max_length=cfg.max_length)["input_ids"])
        return model, {"seconds": time.perf_counter() - start, "dev": res.dev, "test": res.test, "steps": res.fit.steps,
                       "flops": 6 * _encoder_params(model) * n_tok * cfg.finetune_epochs}

    p.store.cached("scorer", conf, build, lambda o, d: _save_model(o[0], d, o[1]), lambda d: None, seed=PRETRAIN_SEED)
    p.scorer_dir = p.store.root / "scorer" / "model"
    stats = _load_stats(p.store.root / "scorer")
    p.compute.add("scorer fine-tune", "importance", stats["seconds"], stats["flops"])
    return stats


def _genept_key(p: Pipeline) -> str:
    return json.loads((p.store.root / "genept" / "manifest.json").read_text())["config_hash"]


def _scores_to_json(scores) -> list[dict]:
    return [{"text": s.text, "tokens": s.tokens, "scores": s.scores.tolist(), "important": s.important.tolist(),
             "label": s.label, "pred": s.pred} for s in scores]


def _scores_from_json(rows) -> list:
    from ..importance.types import TokenScores

    return [TokenScores(text=r["text"], tokens=r["tokens"], scores=np.asarray(r["scores"]), important=r["important"],
                        label=r["label"], pred=r["pred"], method="buffer") for r in rows]


def run_buffer(p: Pipeline) -> pd.DataFrame:
    """Buffer-method labels on the task's train sentences (tagger training) and dev sentences (tagger dev F1)."""
    import torch

    from ..importance.buffer import BufferConfig, buffer_importance
    from ..models import load_classifier
    from ..data import label_names

    cfg = p.cfg
    scorer_key = json.loads((p.store.root / "scorer" / "manifest.json").read_text())["config_hash"]
    conf = _sub(cfg, "buffer_delta", "buffer_max_sentences", "max_length", "task", "task_max_examples", scorer=scorer_key)

    def build():
        start = time.perf_counter()
        model = load_classifier(str(p.scorer_dir), label_names(p.task)).eval()
        bcfg = BufferConfig(delta=cfg.buffer_delta, max_length=cfg.max_length, progress=PROGRESS)
        out, passes = {}, 0
        for split in ("train", "dev"):
            ds = p.task[split]
            if split == "train" and cfg.buffer_max_sentences:
                ds = ds.select(range(min(cfg.buffer_max_sentences, len(ds))))
            with torch.inference_mode():
                out[split] = buffer_importance(model, p.tokenizer, list(ds["text"]), list(ds["label"]), bcfg)
        # each tested token is one candidate row of n_buffer+3 tokens; approximate the forward FLOPs
        cand_tokens = sum(len(s.tokens) * (len(s.tokens) / 2 + 3) for v in out.values() for s in v if s.correct)
        full_tokens = sum(len(s.tokens) + 2 for v in out.values() for s in v)
        flops = 2 * _encoder_params(model) * (cand_tokens + full_tokens)
        return {k: _scores_to_json(v) for k, v in out.items()}, {"seconds": time.perf_counter() - start, "flops": flops}

    def save(obj, d):
        (d / "labels.json").write_text(json.dumps(obj[0]))
        (d / "stats.json").write_text(json.dumps(obj[1]))

    p.store.cached("buffer", conf, build, save, lambda d: None, seed=PRETRAIN_SEED)
    d = p.store.root / "buffer"
    rows = json.loads((d / "labels.json").read_text())
    p.buffer_scores = {k: _scores_from_json(v) for k, v in rows.items()}
    stats = _load_stats(d)
    p.compute.add("buffer labels", "importance", stats["seconds"], stats["flops"])
    return buffer_summary(p.buffer_scores)


def buffer_summary(scores: dict) -> pd.DataFrame:
    rows = []
    for split, ss in scores.items():
        correct = [s for s in ss if s.correct]
        tokens = sum(len(s.tokens) for s in correct)
        imp = sum(int(s.important.sum()) for s in correct)
        rows.append({"split": split, "sentences": len(ss), "scorer_correct": len(correct),
                     "important_tokens": imp, "important_rate": imp / max(1, tokens),
                     "no_important_token": sum(int(s.important.sum() == 0) for s in correct)})
    return pd.DataFrame(rows)


def run_tagger(p: Pipeline) -> dict:
    """Train the importance tagger on the buffer labels (best epoch by dev F1 of the important class)."""
    from ..importance.tagger import train_tagger
    from ..models import load_token_classifier

    cfg = p.cfg
    buf_key = json.loads((p.store.root / "buffer" / "manifest.json").read_text())["config_hash"]
    conf = _sub(cfg, "tagger_model", "tagger_epochs", "tagger_lr", "max_length", "finetune_batch_size", buffer=buf_key,
                genept=_genept_key(p) if cfg.tagger_model == "genept" else None)

    def build():
        start = time.perf_counter()
        model = load_token_classifier(_resolve(p, cfg.tagger_model), num_labels=2, seed=PRETRAIN_SEED)
        tcfg = _train_cfg(cfg, lr=cfg.tagger_lr, batch_size=cfg.finetune_batch_size, epochs=cfg.tagger_epochs)
        res = train_tagger(model, p.buffer_scores["train"], p.buffer_scores["dev"], p.tokenizer, tcfg,
                           class_weight=TAGGER_CLASS_WEIGHT)
        n_tok = sum(len(s.tokens) + 2 for s in p.buffer_scores["train"])
        return model, {"seconds": time.perf_counter() - start, "dev": res.dev, "history": res.fit.history,
                       "positive_rate": res.positive_rate, "n_train": res.n_train,
                       "flops": 6 * _encoder_params(model) * n_tok * cfg.tagger_epochs, "params": _encoder_params(model)}

    p.store.cached("tagger", conf, build, lambda o, d: _save_model(o[0], d, o[1]), lambda d: None, seed=PRETRAIN_SEED)
    p.tagger_dir = p.store.root / "tagger" / "model"
    stats = _load_stats(p.store.root / "tagger")
    p.tagger_metrics = stats
    p.compute.add("tagger training", "importance", stats["seconds"], stats["flops"])
    return stats


def run_corpus_labels(p: Pipeline):
    """The tagger labels the unlabelled in-domain corpus (cached ``datasets`` folder)."""
    from datasets import Dataset

    from ..data import load_corpus
    from ..importance.tagger import label_corpus
    from ..models import load_token_classifier

    cfg = p.cfg
    tag_key = json.loads((p.store.root / "tagger" / "manifest.json").read_text())["config_hash"]
    conf = _sub(cfg, "taskpt_corpus", "taskpt_max_sentences", "max_length", tagger=tag_key)

    def build():
        start = time.perf_counter()
        corpus = load_corpus(cfg.taskpt_corpus, max_sentences=cfg.taskpt_max_sentences or None, seed=PRETRAIN_SEED)
        tagger = load_token_classifier(str(p.tagger_dir), num_labels=2)
        ds = label_corpus(tagger, p.tokenizer, corpus, max_length=cfg.max_length, progress=PROGRESS)
        n_tok = sum(len(x) + 2 for x in ds["token_ids"])
        return ds, {"seconds": time.perf_counter() - start, "flops": 2 * _encoder_params(tagger) * n_tok,
                    "sentences": len(ds), "tokens": n_tok}

    def save(obj, d):
        obj[0].save_to_disk(str(d / "data"))
        (d / "stats.json").write_text(json.dumps(obj[1]))

    p.store.cached("corpus_labels", conf, build, save, lambda d: None, seed=PRETRAIN_SEED)
    d = p.store.root / "corpus_labels"
    p.corpus = Dataset.load_from_disk(str(d / "data"))
    stats = _load_stats(d)
    p.compute.add("label corpus", "importance", stats["seconds"], stats["flops"])
    return corpus_summary(p.corpus)


def corpus_summary(ds) -> pd.DataFrame:
    imp = [np.asarray(x) for x in ds["important"]]
    n_tok = sum(len(x) for x in imp)
    return pd.DataFrame([{"sentences": len(ds), "tokens": n_tok, "important_rate": sum(int(x.sum()) for x in imp) / max(1, n_tok),
                          "sentences_without_important": sum(int(x.sum() == 0) for x in imp)}])


def importance_examples(p: Pipeline, n: int = 8) -> pd.DataFrame:
    """A few corpus sentences with the tagger's important tokens in brackets."""
    rows = []
    for r in p.corpus.select(range(min(n, len(p.corpus)))):
        toks = p.tokenizer.convert_ids_to_tokens(r["token_ids"])
        rows.append({"sentence": " ".join(f"[{t}]" if i else t for t, i in zip(toks, r["important"]))})
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------- TaskPT

def _collator(method: str, tokenizer, seed: int, fallback: str):
    from ..collators import PlainMLMCollator, RandomCountMaskingCollator, SelectiveMaskingCollator

    fb = None if fallback == "none" else fallback
    if method == "selective":
        return SelectiveMaskingCollator(tokenizer, fallback=fb, seed=seed)
    if method == "random":
        return RandomCountMaskingCollator(tokenizer, fallback=fb, seed=seed)
    return PlainMLMCollator(tokenizer, mlm_probability=0.15, seed=seed)


def run_taskpt(p: Pipeline) -> dict:
    """TaskPT for every GenePT budget and method, the same budget (steps, batch, lr, data order) for all."""
    from ..mlm import pack_corpus, train_mlm
    from ..models import load_mlm

    cfg = p.cfg
    packed = pack_corpus(None, p.tokenizer, cfg.max_length, token_ids=list(p.corpus["token_ids"]),
                         token_fields={"importance": list(p.corpus["importance"]), "important": list(p.corpus["important"])})
    corpus_key = json.loads((p.store.root / "corpus_labels" / "manifest.json").read_text())["config_hash"]
    tok_per_step = sum(len(x) for x in packed["input_ids"]) / len(packed) * cfg.mlm_batch_size
    for g, gdir in p.genept_dirs.items():
        for method in cfg.methods:
            name = f"taskpt_g{g}_{method}"
            conf = _sub(cfg, "taskpt_steps", "mlm_lr", "mlm_batch_size", "max_length", "fallback",
                        genept=_genept_key(p), genept_steps_at=g, method=method,
                        corpus=corpus_key if method != "random15" else _sub(cfg, "taskpt_corpus", "taskpt_max_sentences"))

            def build(gdir=gdir, method=method, name=name):
                start = time.perf_counter()
                model = load_mlm(str(gdir))
                tmp = _work_dir(p, name, conf)
                tcfg = _train_cfg(cfg, lr=cfg.mlm_lr, batch_size=cfg.mlm_batch_size, max_steps=max(cfg.taskpt_steps),
                                  warmup_ratio=0.05, eval_every=max(1, max(cfg.taskpt_steps) // 10))
                res = train_mlm(model, packed, p.tokenizer, tcfg, collator=_collator(method, p.tokenizer, PRETRAIN_SEED, cfg.fallback),
                                save_at=cfg.taskpt_steps, on_save=_saver(tmp, start), checkpoint_dir=tmp,
                                desc=f"TaskPT {method} (GenePT {g})")
                return {"tmp": tmp, "history": res.history, "params": _encoder_params(model)}

            def save(obj, d):
                _move_steps(obj, d, cfg.taskpt_steps)

            p.store.cached(name, conf, build, save, lambda d: None, seed=PRETRAIN_SEED)
            stats = _load_stats(p.store.root / name)
            for s in cfg.taskpt_steps:
                p.taskpt_dirs[(g, method, s)] = p.store.root / name / f"step_{s}"
            last = max(cfg.taskpt_steps)
            p.compute.add(f"TaskPT {method} (GenePT {g})", "TaskPT", stats["saved"][str(last)],
                          6 * stats["params"] * tok_per_step * last, genept_steps=g, method=method)
    return p.taskpt_dirs


def taskpt_history(p: Pipeline) -> pd.DataFrame:
    rows = []
    for g in p.genept_dirs:
        for m in p.cfg.methods:
            for h in _load_stats(p.store.root / f"taskpt_g{g}_{m}")["history"]:
                rows.append({"genept_steps": g, "method": m, **h})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ fine-tune

def _finetune(p: Pipeline, ckpt: Path, key: dict, seed: int) -> dict:
    from ..data import label_names
    from ..models import load_classifier
    from ..training import train_classifier

    cfg = p.cfg
    conf = {**_sub(cfg, "task", "task_max_examples", "finetune_lr", "finetune_batch_size", "finetune_epochs", "max_length"),
            **key, "seed": seed}
    name = f"finetune/g{key['g']}_{key['method']}_t{key['t']}_s{seed}"

    def build():
        start = time.perf_counter()
        model = load_classifier(str(ckpt), label_names(p.task), seed=seed)
        tcfg = _train_cfg(cfg, lr=cfg.finetune_lr, batch_size=cfg.finetune_batch_size, epochs=cfg.finetune_epochs, seed=seed)
        res = train_classifier(model, p.task, p.tokenizer, tcfg, desc=f"fine-tune s{seed}")
        return {"dev_accuracy": res.dev["accuracy"], "test_accuracy": res.test["accuracy"], "best_epoch": res.fit.best.get("epoch"),
                "seconds": time.perf_counter() - start}

    return p.store.cached(name, conf, build, lambda o, d: (d / "metrics.json").write_text(json.dumps(o)),
                          lambda d: json.loads((d / "metrics.json").read_text()), seed=seed)


def run_finetune(p: Pipeline) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fine-tune GenePT-only and every final TaskPT checkpoint (and, for the curve, the intermediate
    ones) with every seed; ``extra_seeds`` add runs for the largest GenePT budget's GenePT-only and final
    TaskPT checkpoints. Returns (results: one row per run, steps: the curve rows)."""
    from tqdm.auto import tqdm

    cfg = p.cfg
    jobs = []
    curve_budgets = list(p.genept_dirs) if cfg.curve_all_budgets else [min(p.genept_dirs)]
    gkey = _genept_key(p)
    for g, gdir in p.genept_dirs.items():
        jobs.append((g, "genept", 0, gdir, {"genept": gkey, "g": g, "method": "genept", "t": 0}))
        for m in cfg.methods:
            steps = cfg.taskpt_steps if g in curve_budgets else [max(cfg.taskpt_steps)]
            art = json.loads((p.store.root / f"taskpt_g{g}_{m}" / "manifest.json").read_text())["config_hash"]
            for s in steps:
                jobs.append((g, m, s, p.taskpt_dirs[(g, m, s)], {"artifact": art, "g": g, "method": m, "t": s}))
    runs = [(j, seed) for j in jobs for seed in cfg.seeds]
    top = max(p.genept_dirs)  # extra seeds: only where the table's last row is decided
    runs += [(j, seed) for j in jobs for seed in cfg.extra_seeds if j[0] == top and j[2] in (0, max(cfg.taskpt_steps))]
    rows = []
    for (g, m, s, d, key), seed in tqdm(runs, desc="fine-tune runs", disable=not PROGRESS):
        r = _finetune(p, d, key, seed)
        rows.append({"genept_steps": g, "method": m, "taskpt_steps": s, "seed": seed, **r})
    df = pd.DataFrame(rows)
    # a degenerate run (Mosbach et al. 2021): dev accuracy no better than always answering the dev majority class
    majority = float(pd.Series(p.task["dev"]["label"]).value_counts(normalize=True).max())
    df["failed"] = df["dev_accuracy"] <= majority + FAILED_MARGIN
    p.compute.add("fine-tune (all runs)", "fine-tune", float(df["seconds"].sum()), 0.0)
    final = df[(df["method"] == "genept") | (df["taskpt_steps"] == max(cfg.taskpt_steps))].copy()
    curve = df[df["genept_steps"].isin(curve_budgets) & df["seed"].isin(cfg.seeds)].copy()
    return final.reset_index(drop=True), curve.reset_index(drop=True)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean / std over seeds of test (and dev) accuracy per GenePT budget and condition."""
    order = {m: i for i, m in enumerate(("genept",) + METHODS)}
    g = results.groupby(["genept_steps", "method", "taskpt_steps"], as_index=False)
    out = g.agg(test_mean=("test_accuracy", "mean"), test_std=("test_accuracy", "std"),
                dev_mean=("dev_accuracy", "mean"), dev_std=("dev_accuracy", "std"), n_seeds=("seed", "count"),
                n_failed=("failed", "sum"))
    out["condition"] = out["method"].map({"genept": "GenePT only", "selective": "+TaskPT selective",
                                          "random": "+TaskPT random (same count)", "random15": "+TaskPT random 15%"})
    out = out.sort_values(["genept_steps", "method"], key=lambda s: s.map(order) if s.name == "method" else s)
    return out.fillna({"test_std": 0.0, "dev_std": 0.0}).reset_index(drop=True)


def paired_gaps(results: pd.DataFrame, drop_failed: bool = False) -> pd.DataFrame:
    """Per GenePT budget, the test-accuracy gap of each comparison, paired by fine-tuning seed.

    A seed fixes the classifier head's init and the batch order for every checkpoint, so the per-seed
    difference removes that shared noise. Columns: ``gap_mean`` / ``gap_std`` (points, over seeds),
    ``wins`` (seeds where the first beats the second), a paired t statistic and its two-sided p value,
    and ``verdict``: "separated" when p < 0.05, else "within noise". ``drop_failed``: leave out the
    seeds where either side's run is flagged ``failed`` (stuck at the majority class)."""
    from scipy import stats

    pairs = [("selective", "random"), ("selective", "genept"), ("random", "genept"), ("random15", "genept"),
             ("selective", "random15")]
    final = results[(results["method"] == "genept") | (results["taskpt_steps"] == results["taskpt_steps"].max())]
    rows = []
    for g, df in final.groupby("genept_steps"):
        acc = df.pivot_table(index="seed", columns="method", values="test_accuracy")
        bad = df.pivot_table(index="seed", columns="method", values="failed", aggfunc="max") if drop_failed else None
        for a, b in pairs:
            if a not in acc or b not in acc:
                continue
            d = 100 * (acc[a] - acc[b])
            if bad is not None:
                d = d[~(bad[a].astype(bool) | bad[b].astype(bool))]
            d = d.dropna()
            sd = float(d.std()) if len(d) > 1 else float("nan")
            if len(d) > 1 and sd > 0:
                t = float(d.mean() / (sd / np.sqrt(len(d))))
                pval = float(2 * stats.t.sf(abs(t), len(d) - 1))
            else:
                t, pval = float("nan"), float("nan")
            rows.append({"genept_steps": g, "comparison": f"{a} - {b}", "gap_mean": float(d.mean()), "gap_std": sd,
                         "n_seeds": len(d), "wins": int((d > 0).sum()), "t": t, "p": pval,
                         "verdict": "separated" if pval < 0.05 else "within noise"})
    return pd.DataFrame(rows)


def accuracy_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's table: rows = GenePT budget, columns = condition, cells = 'mean ± std' (test, %)."""
    s = summary.assign(cell=lambda d: (100 * d.test_mean).map("{:.2f}".format) + " ± " + (100 * d.test_std).map("{:.2f}".format))
    return s.pivot(index="genept_steps", columns="condition", values="cell")


def curve_summary(curve: pd.DataFrame) -> pd.DataFrame:
    """Accuracy vs TaskPT steps: step 0 is GenePT-only, shared by every method."""
    parts = []
    for m in [x for x in curve["method"].unique() if x != "genept"]:
        base = curve[curve["method"] == "genept"].assign(method=m)
        parts.append(pd.concat([base, curve[curve["method"] == m]]))
    both = pd.concat(parts)
    return (both.groupby(["genept_steps", "method", "taskpt_steps"], as_index=False)
            .agg(test_mean=("test_accuracy", "mean"), test_std=("test_accuracy", "std"), dev_mean=("dev_accuracy", "mean"),
                 n_seeds=("seed", "count")).fillna({"test_std": 0.0}))


def compute_split(p: Pipeline) -> dict:
    """Compute per stage and per group (GenePT at the smallest budget / importance pipeline / TaskPT per method)."""
    df = p.compute.frame()
    import torch

    return {"stages": df.to_dict(orient="records"), "torch_threads": torch.get_num_threads(),
            "groups_seconds": df.groupby("group")["seconds"].sum().to_dict(),
            "groups_flops": df.groupby("group")["flops"].sum().to_dict()}


def condition_costs(p: Pipeline) -> pd.DataFrame:
    """Pre-training compute behind each condition (fine-tuning excluded): GenePT up to its budget, plus
    for TaskPT conditions the importance pipeline (selective only) and that TaskPT run. The paper's
    claim in these units: GenePT(small) + selective TaskPT vs GenePT(large)."""
    df = p.compute.frame()
    imp = df[df["group"] == "importance"][["seconds", "flops"]].sum()
    rows = []
    for g in p.genept_dirs:
        gen = df[(df["group"] == "GenePT") & (df["steps"] <= g)][["seconds", "flops"]].sum()
        rows.append({"genept_steps": g, "method": "genept", "pretrain_seconds": gen["seconds"], "pretrain_flops": gen["flops"]})
        for m in p.cfg.methods:
            tp = df[(df["group"] == "TaskPT") & (df["genept_steps"] == g) & (df["method"] == m)][["seconds", "flops"]].sum()
            extra = imp if m == "selective" else 0 * imp
            rows.append({"genept_steps": g, "method": m, "pretrain_seconds": gen["seconds"] + extra["seconds"] + tp["seconds"],
                         "pretrain_flops": gen["flops"] + extra["flops"] + tp["flops"]})
    return pd.DataFrame(rows)


def write_outputs(p: Pipeline, results: pd.DataFrame, curve: pd.DataFrame) -> dict[str, Path]:
    """results.csv (per seed), summary.csv (mean/std + pre-training compute), gaps.csv (paired by seed),
    steps.csv (curve), compute.json."""
    summary = summarize(results).merge(condition_costs(p), on=["genept_steps", "method"], how="left")
    steps = curve_summary(curve)
    gaps = pd.concat([paired_gaps(results).assign(runs="all"),
                      paired_gaps(results, drop_failed=True).assign(runs="failed dropped")])
    out = {"results": p.store.write_csv("results.csv", results), "summary": p.store.write_csv("summary.csv", summary),
           "steps": p.store.write_csv("steps.csv", curve), "gaps": p.store.write_csv("gaps.csv", gaps),
           "steps_summary": p.store.write_csv("steps_summary.csv", steps),
           "compute": p.store.write_json("compute.json", compute_split(p)),
           "tagger": p.store.write_json("tagger.json", {k: v for k, v in p.tagger_metrics.items() if k != "history"}),
           "config": p.store.write_json("config.json", asdict(p.cfg))}
    return out


def run_pipeline(cfg: SelectiveConfig) -> dict:
    """Every stage in order (what the notebook does cell by cell)."""
    p = setup(cfg)
    run_genept(p)
    run_scorer(p)
    run_buffer(p)
    run_tagger(p)
    run_corpus_labels(p)
    run_taskpt(p)
    results, curve = run_finetune(p)
    write_outputs(p, results, curve)
    return {"pipeline": p, "results": results, "curve": curve, "summary": summarize(results)}
