"""The selective-masking pipeline as a graph of cached stages (:class:`tmlib.runs.Stage`).

::

    genept ──┬─────────────────────────────────────────────┬──> taskpt_g<G>_<method> ──> finetune/...
             │ (scorer.model = "genept")                   │            │
             └─> scorer ──> buffer ──> tagger ──> corpus_labels ────────┘
    genept, taskpt_* ──> probe (held-out MLM loss / top-1 of every checkpoint)

Asking for any stage builds what it depends on first (:meth:`tmlib.runs.RunStore.get`): the order
lives in the graph, not in the notebook's cells. Every key chains the keys of its upstream stages,
so changing e.g. the buffer delta rebuilds the tagger, the corpus labels, selective TaskPT and its
fine-tuning runs, and nothing else.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...data import TaskRecipe
from ...finetune import classifier_stage
from ...runs import RunStore, Stage
from .config import SelectiveConfig

FAILED_MARGIN = 0.05  # a run within this of the dev majority-class rate is flagged failed (~2 binomial std on 400 dev)


# ----------------------------------------------------------------------------------------- values

@dataclass
class Checkpoints:
    """Models saved at several steps of one MLM run (GenePT or TaskPT) and the run's stats."""

    dirs: dict[int, Path | str]       # a folder, or a published checkpoint name (genept.checkpoints)
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
    scores: dict            # split -> list[TokenScores]
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


def split_corpus(texts: list[str], dev_fraction: float, seed: int, docs: list | None = None
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


def _save_checkpoints(obj: dict, d: Path) -> None:
    """Move the per-step models from the build's work dir into artifact ``d``."""
    import shutil

    for step in obj["steps"]:
        shutil.move(str(obj["work"] / f"step_{step}"), str(d / f"step_{step}"))
    _write_json(d / "stats.json", obj["stats"])


def _load_checkpoints(d: Path) -> Checkpoints:
    stats = _read_json(d / "stats.json")
    for k in ("saved", "saved_seconds"):  # JSON object keys are strings; steps are ints
        if k in stats:
            stats[k] = {int(step): v for step, v in stats[k].items()}
    if stats.get("published"):
        return Checkpoints({int(s): name for s, name in zip(stats["steps"], stats["published"])}, stats)
    return Checkpoints({int(s): d / f"step_{s}" for s in stats["steps"]}, stats)


def mlm_checkpoints(ctx, model, packed, tokenizer, tcfg, steps: list[int], start: float, desc: str,
                    collator=None, record=None) -> tuple[object, dict[int, dict]]:
    """One MLM run (GenePT or TaskPT) that saves the model at every step in ``steps`` to
    ``<work_dir>/step_<s>`` with a record: seconds since ``start`` and whatever ``record(model)`` adds (TaskPT:
    the held-out MLM loss). Resumable: the run checkpoints into the work folder, and the steps saved before an
    interruption keep their records on disk. Returns ``(FitResult, step -> record)``."""
    from ...mlm import train_mlm

    def on_save(step, m):
        d = ctx.work_dir / f"step_{step}"
        m.save_pretrained(d)
        _write_json(d / "record.json", {"seconds": time.perf_counter() - start, **(record(m) if record else {})})

    res = train_mlm(model, packed, tokenizer, tcfg, collator=collator, save_at=steps, on_save=on_save,
                    checkpoint_dir=ctx.work_dir, desc=desc)
    saved = {}
    for step in steps:
        rec = ctx.work_dir / f"step_{step}" / "record.json"
        saved[step] = _read_json(rec)
        rec.unlink()
    return res, saved


# ----------------------------------------------------------------------------------------- experiment

class SelectiveExperiment:
    """Notebook 01's experiment: stage factories (``*_stage``) and the values they produce."""

    def __init__(self, cfg: SelectiveConfig):
        from ...models import load_tokenizer
        from ...runtime import set_threads

        self.cfg = cfg
        self.threads = set_threads(cfg.threads)
        self.store = RunStore(cfg.out_dir, progress=cfg.progress)
        g = cfg.genept.model
        self.tokenizer = load_tokenizer("minilm" if g.startswith("scratch:") else g)
        self.task_spec = TaskRecipe(cfg.task, cfg.task_max_examples, seed=0)   # scorer and buffer labels
        self.task = self.task_spec.load()
        # fine-tuning: the same train and dev rows, tested on the held-out pool (or the test split)
        self.finetune_spec = TaskRecipe(cfg.task, cfg.task_max_examples, seed=0, test_pool=cfg.test_pool,
                                        max_test=cfg.max_test)
        self.finetune_data = self.finetune_spec.load() if cfg.test_pool != "split" or cfg.max_test else self.task

    # ------------------------------------------------------------------------------ helpers
    def train_config(self, **kw):
        from ...training import TrainConfig

        base = dict(progress=self.cfg.progress, seed=self.cfg.pretrain_seed, group_by_length=True,
                    mixed_precision=self.cfg.mixed_precision, kernels=self.cfg.kernels)
        base.update(kw)
        return TrainConfig(**base)

    def _finetune_train(self, lr: float, epochs: float, seed: int):
        f = self.cfg.finetune
        return self.train_config(lr=lr, batch_size=f.batch_size, epochs=epochs, max_length=f.max_length,
                                 warmup_ratio=f.warmup_ratio, seed=seed)

    def get(self, stage: Stage):
        return self.store.get(stage)

    def _corpus_texts(self, name: str, max_sentences: int) -> list[str]:
        from ...data import load_corpus

        return list(load_corpus(name, max_sentences=max_sentences or None, seed=self.cfg.pretrain_seed)["text"])

    def taskpt_corpus(self):
        """The in-domain corpus TaskPT trains on (``text``; with ``taskpt.packing="documents"`` also ``doc``,
        capped by whole documents)."""
        from ...data import load_corpus

        tp = self.cfg.taskpt
        return load_corpus(tp.corpus, max_sentences=tp.max_sentences or None, seed=self.cfg.pretrain_seed,
                           documents=tp.packing == "documents")

    def taskpt_split(self, corpus) -> tuple[list[int], list[int]]:
        """(train, dev) rows of the TaskPT corpus; by document under ``packing="documents"``."""
        docs = list(corpus["doc"]) if "doc" in corpus.column_names else None
        return split_corpus(list(corpus["text"]), self.cfg.taskpt.dev_fraction, self.cfg.pretrain_seed, docs)

    def genept_probe_texts(self) -> tuple[list[str], list[str]]:
        """Held-out general sentences (never in GenePT) and in-domain ones (the TaskPT dev rows)."""
        gen = self._corpus_texts(self.cfg.genept.corpus, self.cfg.genept.max_sentences)
        _, gen_dev = split_corpus(gen, 0.1, self.cfg.pretrain_seed)
        corpus = self.taskpt_corpus()
        ind = list(corpus["text"])
        _, ind_dev = self.taskpt_split(corpus)
        n = self.cfg.genept.probe_sentences
        return [gen[i] for i in gen_dev][:n], [ind[i] for i in ind_dev][:n]

    # ------------------------------------------------------------------------------ GenePT
    @cached_property
    def genept_stage(self) -> Stage[Checkpoints]:
        cfg, g = self.cfg, self.cfg.genept

        def build(ctx):
            from ...mlm import corpus_tokens, pack_corpus
            from ...models import load_mlm

            if g.checkpoints:  # published under-trained checkpoints (MultiBERTs): nothing to train here
                for name in g.checkpoints:
                    load_mlm(name)  # fail now, with the loader's clear message, if one cannot be loaded
                stats = {"steps": g.steps, "published": g.checkpoints, "history": [], "params": 0,
                         "saved_seconds": {s: 0.0 for s in g.steps}, "tokens_per_step": 0.0}
                return {"work": ctx.work_dir, "steps": [], "stats": stats}
            start = time.perf_counter()
            texts = self._corpus_texts(g.corpus, g.max_sentences)
            train_idx, _ = split_corpus(texts, 0.1, cfg.pretrain_seed)   # 10% held out for the probe
            packed = pack_corpus([texts[i] for i in train_idx], self.tokenizer, g.max_length)
            model = load_mlm(g.model, seed=cfg.pretrain_seed)
            tcfg = self.train_config(lr=g.lr, batch_size=g.batch_size, max_steps=max(g.steps), max_length=g.max_length,
                                     warmup_ratio=g.warmup_ratio, eval_every=max(1, max(g.steps) // 20),
                                     checkpoint_every=_checkpoint_every(max(g.steps)))
            res, saved = mlm_checkpoints(ctx, model, packed, self.tokenizer, tcfg, g.steps, start, "GenePT")
            stats = {"steps": g.steps, "history": res.history,
                     "saved_seconds": {step: rec["seconds"] for step, rec in saved.items()}, "rows": len(packed),
                     "tokens_per_step": corpus_tokens(packed) / len(packed) * g.batch_size,
                     "params": _encoder_params(model)}
            return {"work": ctx.work_dir, "steps": g.steps, "stats": stats}

        config = {"genept": asdict(g), "seed": cfg.pretrain_seed, "mixed_precision": cfg.mixed_precision}
        if cfg.kernels != "hf":
            config["kernels"] = cfg.kernels   # only when set: keys of the runs made before the option stay valid
        return Stage("genept", config, build, _save_checkpoints, _load_checkpoints, seed=cfg.pretrain_seed)

    def genept(self) -> Checkpoints:
        return self.get(self.genept_stage)

    # ------------------------------------------------------------------------------ importance
    @cached_property
    def scorer_stage(self) -> Stage:
        s = self.cfg.scorer
        init = self.genept_stage if s.model == "genept" else s.model
        return classifier_stage("scorer", init, self.task_spec,
                                self._finetune_train(s.lr, s.epochs, self.cfg.pretrain_seed),
                                data=self.task, tokenizer=self.tokenizer, desc="scorer")

    @cached_property
    def buffer_stage(self) -> Stage[BufferLabels]:
        cfg, b = self.cfg, self.cfg.buffer

        def build(ctx, scorer):
            import torch

            from ...importance.buffer import buffer_importance
            from ...models import load_saved_classifier

            start = time.perf_counter()
            model = load_saved_classifier(scorer.model_dir)
            bcfg = b.rule(progress=cfg.progress)
            out = {}
            for split in ("train", "dev"):
                ds = self.task[split]
                if split == "train" and b.max_sentences:
                    ds = ds.select(range(min(b.max_sentences, len(ds))))
                aspects = list(ds["aspect"]) if "aspect" in ds.column_names else None  # [CLS] aspect [SEP] buffer [SEP]
                with torch.inference_mode():
                    out[split] = buffer_importance(model, self.tokenizer, list(ds["text"]), list(ds["label"]), bcfg,
                                                   aspects=aspects)
            # each tested token is one candidate row of ~n/2 + 3 tokens; approximate the forward FLOPs
            cand = sum(len(s.tokens) * (len(s.tokens) / 2 + 3) for v in out.values() for s in v if s.correct)
            full = sum(len(s.tokens) + 2 for v in out.values() for s in v)
            stats = {"seconds": time.perf_counter() - start, "flops": 2 * _encoder_params(model) * (cand + full)}
            return {k: [_score_row(s) for s in v] for k, v in out.items()}, stats

        def save(obj, d):
            _write_json(d / "labels.json", obj[0])
            _write_json(d / "stats.json", obj[1])

        def load(d):
            rows = _read_json(d / "labels.json")
            return BufferLabels({k: [_score_from_row(r) for r in v] for k, v in rows.items()},
                                _read_json(d / "stats.json"))

        key = {k: v for k, v in asdict(b).items() if k != "rules_sentences"}  # not a property of the labels
        config = {"buffer": key, "task": self.task_spec.key()}
        return Stage("buffer", config, build, save, load, deps={"scorer": self.scorer_stage}, seed=cfg.pretrain_seed)

    @cached_property
    def rules_stage(self) -> Stage:
        """The effect of each non-official buffer option on the labels (first token kept; tmlib's or no
        stop list; spaCy's list on whole words), on the first ``buffer.rules_sentences`` train sentences."""
        from ...importance.buffer import RULE_VARIANTS

        cfg, b = self.cfg, self.cfg.buffer
        variants = [dict(v) for v in RULE_VARIANTS]   # a list of dicts: part of the stage key

        def build(ctx, scorer):
            import torch

            from ...importance.buffer import compare_rule_variants
            from ...models import load_saved_classifier

            model = load_saved_classifier(scorer.model_dir)
            ds = self.task["train"].select(range(min(b.rules_sentences, len(self.task["train"]))))
            base = b.rule(progress=False)
            todo = [v for v in variants if not all(getattr(base, k) == val for k, val in v.items())]
            with torch.inference_mode():   # one walk per distinct rule (2 for the four variants), not one per row
                return compare_rule_variants(model, self.tokenizer, list(ds["text"]), list(ds["label"]), base, todo,
                                             aspects=list(ds["aspect"]) if "aspect" in ds.column_names else None)

        return Stage("buffer_rules", {"buffer": asdict(b), "variants": variants, "task": self.task_spec.key()}, build,
                     lambda df, d: df.to_csv(d / "rules.csv", index=False), lambda d: pd.read_csv(d / "rules.csv"),
                     deps={"scorer": self.scorer_stage}, seed=cfg.pretrain_seed)

    @cached_property
    def tagger_stage(self) -> Stage[SavedModel]:
        cfg, t = self.cfg, self.cfg.tagger

        def build(ctx, buffer, genept=None):
            from ...importance.tagger import train_tagger
            from ...models import load_token_classifier

            start = time.perf_counter()
            init = str(genept.model_dir) if genept is not None else t.model
            model = load_token_classifier(init, num_labels=2, seed=cfg.pretrain_seed)
            tcfg = self.train_config(lr=t.lr, batch_size=cfg.finetune.batch_size, epochs=t.epochs,
                                     max_length=cfg.taskpt.max_length)
            res = train_tagger(model, buffer.scores["train"], buffer.scores["dev"], self.tokenizer, tcfg,
                               class_weight=t.class_weight)
            n_tok = sum(len(s.tokens) + 2 for s in buffer.scores["train"])
            return model, {"seconds": time.perf_counter() - start, "dev": res.dev, "history": res.fit.history,
                           "positive_rate": res.positive_rate, "n_train": res.n_train,
                           "flops": 6 * _encoder_params(model) * n_tok * t.epochs}

        def save(obj, d):
            obj[0].save_pretrained(d / "model")
            _write_json(d / "stats.json", obj[1])

        deps = {"buffer": self.buffer_stage}
        if t.model == "genept":
            deps["genept"] = self.genept_stage
        config = {"tagger": asdict(t), "max_length": cfg.taskpt.max_length, "batch_size": cfg.finetune.batch_size}
        return Stage("tagger", config, build, save, lambda d: SavedModel(d / "model", _read_json(d / "stats.json")),
                     deps=deps, seed=cfg.pretrain_seed)

    @cached_property
    def corpus_stage(self) -> Stage:
        cfg, tp = self.cfg, self.cfg.taskpt

        def build(ctx, tagger):
            from ...importance.tagger import label_corpus
            from ...models import load_token_classifier

            start = time.perf_counter()
            corpus = self.taskpt_corpus()
            model = load_token_classifier(str(tagger.model_dir), num_labels=2)
            ds = label_corpus(model, self.tokenizer, list(corpus["text"]), max_length=tp.max_length,
                              stopwords=cfg.buffer.stopwords, progress=cfg.progress)
            if "doc" in corpus.column_names:
                ds = ds.add_column("doc", list(corpus["doc"]))
            n_tok = sum(len(x) + 2 for x in ds["token_ids"])
            return ds, {"seconds": time.perf_counter() - start, "flops": 2 * _encoder_params(model) * n_tok,
                        "sentences": len(ds), "tokens": n_tok}

        def save(obj, d):
            obj[0].save_to_disk(str(d / "data"))
            _write_json(d / "stats.json", obj[1])

        def load(d):
            from datasets import Dataset

            return Dataset.load_from_disk(str(d / "data"))

        config = {"corpus": tp.corpus, "max_sentences": tp.max_sentences, "max_length": tp.max_length,
                  "stopwords": cfg.buffer.stopwords, "seed": cfg.pretrain_seed}
        if tp.packing == "documents":
            config["documents"] = True   # capped by whole documents, each row with its document
        return Stage("corpus_labels", config, build, save, load, deps={"tagger": self.tagger_stage},
                     seed=cfg.pretrain_seed)

    # ------------------------------------------------------------------------------ TaskPT
    def taskpt_stage(self, genept_step: int, method: str) -> Stage[Checkpoints]:
        cfg, tp = self.cfg, self.cfg.taskpt
        if genept_step not in cfg.genept.steps:
            raise KeyError(f"GenePT budget {genept_step} is not in genept.steps {cfg.genept.steps}")

        def build(ctx, genept, corpus):
            from ...collators import StaticMLMCollator
            from ...mlm import draw_static_masks, pack_corpus, pack_documents
            from ...models import load_mlm

            start = time.perf_counter()
            train_idx, dev_idx = self.taskpt_split(corpus)
            fields = ("importance", "important")

            def pack(idx):
                sub = corpus.select(idx)
                token_fields = {f: list(sub[f]) for f in fields}
                if tp.packing == "documents":
                    return pack_documents(list(sub["token_ids"]), list(sub["doc"]), self.tokenizer, tp.max_length,
                                          short_seq_prob=tp.short_seq_prob, seed=cfg.pretrain_seed,
                                          token_fields=token_fields)
                return pack_corpus(None, self.tokenizer, tp.max_length, token_ids=list(sub["token_ids"]),
                                   token_fields=token_fields)

            packed, dev = pack(train_idx), pack(dev_idx)
            train_collator = collator(method, self.tokenizer, seed=cfg.pretrain_seed, fallback=tp.fallback)
            if tp.masks == "static":   # drawn once, as the official data files are written
                packed = draw_static_masks(packed, train_collator, tp.max_predictions, seed=cfg.pretrain_seed)
                dev = draw_static_masks(dev, collator(method, self.tokenizer, seed=12345, fallback=tp.fallback),
                                        tp.max_predictions, seed=12345)
                train_collator = StaticMLMCollator(self.tokenizer)

            def dev_collator():
                if tp.masks == "static":
                    return StaticMLMCollator(self.tokenizer)
                return collator(method, self.tokenizer, seed=12345, fallback=tp.fallback)
            model = load_mlm(str(genept.checkpoint(genept_step)))
            tcfg = self.train_config(lr=tp.lr, batch_size=tp.batch_size, max_steps=max(tp.steps),
                                     max_length=tp.max_length, warmup_ratio=tp.warmup_ratio,
                                     eval_every=max(1, max(tp.steps) // 20),
                                     checkpoint_every=_checkpoint_every(max(tp.steps)))
            # each checkpoint's held-out MLM loss under the SAME masking as training, with fixed masks
            res, saved = mlm_checkpoints(ctx, model, packed, self.tokenizer, tcfg, tp.steps, start,
                                         f"TaskPT {method} (GenePT {genept_step})", collator=train_collator,
                                         record=lambda m: {"dev_loss": mlm_dev_loss(m, dev, dev_collator())})
            selected = (min(tp.steps, key=lambda s: saved[s]["dev_loss"]) if tp.select == "dev_loss" else max(tp.steps))
            stats = {"steps": tp.steps, "history": res.history, "saved": saved, "selected": selected,
                     "params": _encoder_params(model), "train_rows": len(packed), "dev_rows": len(dev),
                     "tokens_per_step": sum(len(x) for x in packed["input_ids"]) / len(packed) * tp.batch_size}
            return {"work": ctx.work_dir, "steps": tp.steps, "stats": stats}

        config = {"taskpt": {k: v for k, v in asdict(tp).items() if k != "methods"}, "method": method,
                  "genept_step": genept_step, "seed": cfg.pretrain_seed, "mixed_precision": cfg.mixed_precision}
        return Stage(f"taskpt_g{genept_step}_{method}", config, build, _save_checkpoints, _load_checkpoints,
                     deps={"genept": self.genept_stage, "corpus": self.corpus_stage}, seed=cfg.pretrain_seed)

    def taskpt(self) -> dict[tuple[int, str], Checkpoints]:
        return {(g, m): self.get(self.taskpt_stage(g, m))
                for g in self.cfg.genept.steps for m in self.cfg.taskpt.methods}

    # ------------------------------------------------------------------------------ probe
    @cached_property
    def probe_stage(self) -> Stage:
        cfg = self.cfg
        tstages = {f"t_{g}_{m}": self.taskpt_stage(g, m) for g in cfg.genept.steps for m in cfg.taskpt.methods}

        def build(ctx, genept, **taskpt):
            from ...mlm import mlm_probe
            from ...models import load_mlm

            general, indomain = self.genept_probe_texts()
            rows = []
            ckpts = [("genept", g, "genept", 0, genept.checkpoint(g)) for g in cfg.genept.steps]
            for key, run in taskpt.items():
                _, g, m = key.split("_", 2)
                ckpts.append(("taskpt", int(g), m, run.selected, run.checkpoint(run.selected)))
            for stage, g, m, t, path in ckpts:
                model = load_mlm(str(path))
                for domain, texts in (("general", general), ("in-domain", indomain)):
                    r = mlm_probe(model, self.tokenizer, texts, max_length=cfg.taskpt.max_length, seed=0,
                                  mixed_precision=cfg.mixed_precision)
                    rows.append({"stage": stage, "genept_steps": g, "method": m, "taskpt_steps": t, "domain": domain,
                                 "loss": r["loss"], "top1": r["top1"], "n_masked": r["n_masked"]})
                ctx.log(f"probe {stage} g{g} {m}: in-domain top-1 {rows[-1]['top1']:.3f}")
            return pd.DataFrame(rows)

        return Stage("probe", {"sentences": cfg.genept.probe_sentences, "max_length": cfg.taskpt.max_length},
                     build, lambda df, d: df.to_csv(d / "probe.csv", index=False),
                     lambda d: pd.read_csv(d / "probe.csv"), deps={"genept": self.genept_stage, **tstages})

    def probe(self) -> pd.DataFrame:
        return self.get(self.probe_stage)

    # ------------------------------------------------------------------------------ fine-tuning
    def finetune_jobs(self) -> list[dict]:
        """Every fine-tuning run: GenePT-only and the selected TaskPT checkpoint of every budget and
        method with ``seeds + extra_seeds`` (the table and the paired gaps), and the curve's other
        TaskPT checkpoints with ``seeds`` only."""
        cfg = self.cfg
        curve_budgets = cfg.genept.steps if cfg.curve_all_budgets else [min(cfg.genept.steps)]
        jobs = []
        for g in cfg.genept.steps:
            seeds = cfg.seeds + cfg.extra_seeds
            jobs += [dict(g=g, method="genept", t=0, final=True, seed=s, stage=self.genept_stage, pick=g)
                     for s in seeds]
            for m in cfg.taskpt.methods:
                st = self.taskpt_stage(g, m)
                sel = self.get(st).selected
                jobs += [dict(g=g, method=m, t=sel, final=True, seed=s, stage=st, pick=sel) for s in seeds]
                if g in curve_budgets:
                    jobs += [dict(g=g, method=m, t=t, final=False, seed=s, stage=st, pick=t)
                             for t in cfg.taskpt.steps if t != sel for s in cfg.seeds]
        return jobs

    def finetune_stage(self, job: dict) -> Stage:
        """The fine-tuning stage of one job of :meth:`finetune_jobs`."""
        f = self.cfg.finetune
        name = f"finetune/g{job['g']}_{job['method']}_t{job['t']}_s{job['seed']}"
        return classifier_stage(name, job["stage"], self.finetune_spec,
                                self._finetune_train(f.lr, f.epochs, job["seed"]),
                                data=self.finetune_data, tokenizer=self.tokenizer, pick=job["pick"],
                                desc=f"fine-tune s{job['seed']}")

    def predictions(self) -> dict:
        """``(genept_steps, method, seed) -> predicted test classes`` of every final fine-tuning run (the paired
        gaps' test-sampling term)."""
        return {(j["g"], j["method"], j["seed"]): self.get(self.finetune_stage(j)).predictions
                for j in self.finetune_jobs() if j["final"]}

    def finetune(self) -> pd.DataFrame:
        """One row per fine-tuning run (``final``: the row enters the accuracy table and the gaps)."""
        from tqdm.auto import tqdm

        rows = []
        for j in tqdm(self.finetune_jobs(), desc="fine-tune runs", disable=not self.cfg.progress):
            m = self.get(self.finetune_stage(j)).metrics
            rows.append({"genept_steps": j["g"], "method": j["method"], "taskpt_steps": j["t"], "seed": j["seed"],
                         "final": j["final"], "dev_accuracy": m["dev_accuracy"], "test_accuracy": m["test_accuracy"],
                         "test_n": m.get("test_n"), "best_epoch": m["best_epoch"], "seconds": m["seconds"]})
        df = pd.DataFrame(rows)
        # a degenerate run (Mosbach et al. 2021): dev accuracy no better than always answering the majority class
        majority = float(pd.Series(self.task["dev"]["label"]).value_counts(normalize=True).max())
        df["failed"] = df["dev_accuracy"] <= majority + FAILED_MARGIN
        return df

    # ------------------------------------------------------------------------------ compute
    def compute_rows(self, results: pd.DataFrame | None = None) -> pd.DataFrame:
        """Seconds (measured when built) and FLOP estimates per stage; loaded stages report their build."""
        cfg = self.cfg
        rows = []
        gen = self.genept()
        prev_step, prev_sec = 0, 0.0
        for step in cfg.genept.steps:  # one run: each budget's stage is the steps since the previous budget
            sec = float(gen.stats["saved_seconds"][step])
            rows.append({"stage": f"GenePT steps {prev_step}-{step}", "group": "GenePT", "seconds": sec - prev_sec,
                         "flops": 6 * gen.stats["params"] * gen.stats["tokens_per_step"] * (step - prev_step),
                         "steps": step})
            prev_step, prev_sec = step, sec
        scorer = self.get(self.scorer_stage).metrics
        n_tok = sum(len(x) for x in self.tokenizer(list(self.task["train"]["text"]), truncation=True,
                                                    max_length=cfg.finetune.max_length)["input_ids"])
        rows.append({"stage": "scorer fine-tune", "group": "importance", "seconds": scorer["seconds"],
                     "flops": 6 * gen.stats["params"] * n_tok * cfg.scorer.epochs})
        rows.append({"stage": "buffer labels", "group": "importance", **_sf(self.get(self.buffer_stage).stats)})
        rows.append({"stage": "tagger training", "group": "importance", **_sf(self.get(self.tagger_stage).stats)})
        corpus_stats = _read_json(self.store.root / "corpus_labels" / "stats.json")
        rows.append({"stage": "label corpus", "group": "importance", **_sf(corpus_stats)})
        for (g, m), run in self.taskpt().items():
            last = max(cfg.taskpt.steps)
            rows.append({"stage": f"TaskPT {m} (GenePT {g})", "group": "TaskPT",
                         "seconds": run.stats["saved"][last]["seconds"],
                         "flops": 6 * run.stats["params"] * run.stats["tokens_per_step"] * last, "genept_steps": g,
                         "method": m})
        if results is not None:
            rows.append({"stage": "fine-tune (all runs)", "group": "fine-tune",
                         "seconds": float(results["seconds"].sum()), "flops": 0.0})
        return pd.DataFrame(rows)


def _sf(stats: dict) -> dict:
    return {"seconds": float(stats["seconds"]), "flops": float(stats["flops"])}


def _score_row(s) -> dict:
    row = {"text": s.text, "tokens": s.tokens, "scores": np.asarray(s.scores).tolist(),
           "important": np.asarray(s.important).tolist(), "label": s.label, "pred": s.pred}
    if s.meta.get("aspect") is not None:  # aspect tasks: the tagger merges one text's aspects (official)
        row["aspect"] = s.meta["aspect"]
    return row


def _score_from_row(r: dict):
    from ...importance.types import TokenScores

    return TokenScores(text=r["text"], tokens=r["tokens"], scores=np.asarray(r["scores"]), important=r["important"],
                       label=r["label"], pred=r["pred"], method="buffer",
                       meta={"aspect": r["aspect"]} if "aspect" in r else {})


def mlm_dev_loss(model, packed, collate, batch_size: int = 32) -> float:
    """Mean MLM loss (masked positions) on held-out packed rows under ``collate``'s masking; a fresh
    seeded collator gives the same masks at every checkpoint, so the losses are comparable."""
    import torch

    from ...mlm import MaskedOnlyMLM

    wrapped = MaskedOnlyMLM(model)
    was = model.training
    model.eval()
    rows = [{k: packed[i][k] for k in packed.column_names if k in ("input_ids", "attention_mask", "token_type_ids",
                                                                   "sent_ids", "importance", "important", "labels")}
            for i in range(len(packed))]
    total, n = 0.0, 0
    with torch.inference_mode():
        for k in range(0, len(rows), batch_size):
            out = wrapped(**collate(rows[k:k + batch_size]))
            if out.n_masked:
                total += out.loss.item() * out.n_masked
                n += out.n_masked
    model.train(was)
    return total / max(1, n)


def collator(method: str, tokenizer, seed: int, fallback: str = "none"):
    """The TaskPT masking collator of ``method`` (selective | random | random15)."""
    from ...collators import PlainMLMCollator, RandomCountMaskingCollator, SelectiveMaskingCollator

    fb = None if fallback == "none" else fallback
    if method == "selective":
        return SelectiveMaskingCollator(tokenizer, fallback=fb, seed=seed)
    if method == "random":
        return RandomCountMaskingCollator(tokenizer, fallback=fb, seed=seed)
    if method == "random15":
        return PlainMLMCollator(tokenizer, mlm_probability=0.15, seed=seed)
    raise ValueError(f"unknown TaskPT masking method {method!r}; choose selective, random or random15")
