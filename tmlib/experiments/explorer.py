"""Notebook 02: which tokens does a fine-tuned classifier rely on, by four importance methods?

The experiment shape every notebook module shares: :class:`ExplorerConfig` (``Config``), :func:`plan` (pure: the
scorer's data and training config, one :class:`ScoresRecipe` per method), :class:`Experiment` (the stages through
the run folder's one :class:`~tmlib.core.runs.RunStore`: ``scorer/``, ``scores_<method>/``), pure tables
(:func:`top_tokens`, :func:`agreement`, :func:`summary_table`) and ``Experiment.write``.

1. the scorer: fine-tune the classifier (default: packaged MiniLM on MR sentences), ``scorer/``;
2. the scores: ``n_examples`` sentences of the ``split`` with every method (occlusion, grad x input, integrated
   gradients, the buffer method), ``scores_<method>/`` per method, every row also in ``scores.jsonl``;
3. ``report.html``: every example, one highlighted row per method;
4. the words with the highest mean score per explained class (``top_tokens.csv``) and the methods' mean
   per-text Spearman agreement (``agreement.csv``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tmlib.core.config import ConfigError
from tmlib.core.runs import RunStore, Stage, atomic_write_text
from tmlib.selective.types import TokenScores

ALL_METHODS = ["occlusion", "grad_x_input", "integrated_gradients", "buffer"]


@dataclass
class ExplorerConfig:
    out_dir: str  # where report.html, CSV, JSON and PNG files are written
    task: str = "mr"  # tmlib.tasks.data task the scorer is fine-tuned on
    text_column: str = "text"  # your file's (or hub dataset's) text column
    label_column: str = "label"  # your file's label column
    encoding: str = "utf-8"  # your file's text encoding (e.g. latin-1)
    model: str = "minilm"  # scorer backbone (tmlib.core.models name)
    train_examples: int = 1000  # training sentences for the scorer (0: the whole train split)
    epochs: float = 1.0  # scorer fine-tuning epochs
    max_steps: int = 0  # > 0 caps the scorer's training steps (smoke runs)
    lr: float = 1e-4  # scorer learning rate
    batch_size: int = 32  # scorer training batch size
    max_length: int = 48  # WordPieces per sentence (training and scoring)
    seed: int = 0  # scorer seed (and data split seed)
    split: str = "dev"  # which split's sentences are explained
    n_examples: int = 60  # sentences scored by every method
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))  # importance methods to compare
    ig_steps: int = 8  # integrated-gradients Riemann steps
    ig_baseline: str = "pad"  # integrated-gradients baseline token: "pad" or "mask"
    occlusion_mode: str = "remove"  # occlusion: "remove" the token or replace it by "mask"
    delta: float = 0.01  # buffer method threshold (official: 0.01)
    top_k: int = 12  # words per class in the top-token table and figure
    min_count: int = 3  # a word must occur this often to be ranked
    drop_stopwords: bool = True  # leave stop words and punctuation out of the top-token ranking
    top_method: str = "occlusion"  # method whose top tokens are plotted
    report_examples: int = 0  # examples in report.html (0: all n_examples)
    # show the live widget (keep False under papermill: it hangs on widgets)
    interactive: bool = False
    progress: bool = True  # tqdm progress bars

    def __post_init__(self):
        from tmlib.importance.attribution import METHODS

        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"methods: unknown {unknown or 'empty list'}; valid: {', '.join(METHODS)}")
        if self.top_method not in self.methods:
            raise ConfigError(f"top_method {self.top_method!r} must be one of methods {self.methods}")
        if self.split not in ("train", "dev", "test"):
            raise ConfigError(f"split must be 'train', 'dev' or 'test', got {self.split!r}")
        if self.ig_baseline not in ("pad", "mask"):
            raise ConfigError(f"ig_baseline must be 'pad' or 'mask', got {self.ig_baseline!r}")
        if self.occlusion_mode not in ("remove", "mask"):
            raise ConfigError(f"occlusion_mode must be 'remove' or 'mask', got {self.occlusion_mode!r}")
        for name in ("n_examples", "top_k", "min_count", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("train_examples", "max_steps", "report_examples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 = all / no cap), got {getattr(self, name)}")
        if self.ig_steps < 2:
            raise ConfigError(f"ig_steps must be >= 2, got {self.ig_steps}")
        if self.max_length < 8:
            raise ConfigError(f"max_length must be >= 8, got {self.max_length}")

    def method_kwargs(self, method: str) -> dict:
        """Keyword arguments :func:`tmlib.importance.attribution.score_tokens` gets for ``method``."""
        if method == "buffer":
            return {"delta": self.delta, "max_length": self.max_length, "progress": self.progress}
        kw = {"max_length": self.max_length, "progress": self.progress}
        if method == "integrated_gradients":
            kw.update(n_steps=self.ig_steps, baseline=self.ig_baseline)
        if method == "occlusion":
            kw.update(mode=self.occlusion_mode)
        return kw


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class ScoresRecipe:
    """One importance method's scores of the explained sentences: what its artifact depends on."""

    scorer: dict  # the scorer's identifying settings
    method: str
    kwargs: dict  # what score_tokens gets for the method
    split: str
    n: int  # sentences scored

    @property
    def name(self) -> str:
        return f"scores_{self.method}"

    def key(self) -> dict:
        return {"scorer": self.scorer, "method": self.method, "kwargs": self.kwargs, "split": self.split, "n": self.n}


@dataclass(frozen=True)
class ExplorerPlan:
    """Notebook 02's runs as recipes: the scorer's data and training, and one :class:`ScoresRecipe` per method
    (``n`` is filled in once the split is loaded: :meth:`Experiment.scores`)."""

    data: object  # TaskRecipe
    scorer: object  # TrainConfig
    scores: tuple[ScoresRecipe, ...]


def plan(cfg: ExplorerConfig) -> ExplorerPlan:
    """Config -> recipes: the only code that reads the config for per-run settings."""
    from tmlib.core.training import TrainConfig
    from tmlib.tasks.data import TaskRecipe

    data = TaskRecipe(
        cfg.task,
        seed=cfg.seed,
        max_train=cfg.train_examples,
        text_column=cfg.text_column,
        label_column=cfg.label_column,
        encoding=cfg.encoding,
    )
    scorer = TrainConfig(
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        max_length=cfg.max_length,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    keys = ("task", "model", "train_examples", "epochs", "max_steps", "lr", "batch_size", "max_length", "seed")
    scorer_key = {k: getattr(cfg, k) for k in keys}
    scores = tuple(ScoresRecipe(scorer_key, m, cfg.method_kwargs(m), cfg.split, cfg.n_examples) for m in cfg.methods)
    return ExplorerPlan(data, scorer, scores)


def scores_stage(recipe: ScoresRecipe, model, tokenizer, texts: list[str], labels: list[int]) -> Stage:
    """The stage of one method's scores of ``texts``: ``scores.jsonl`` and the seconds it took (``timing.json``)."""

    def build(ctx):
        from tmlib.importance.attribution import score_tokens

        start = time.perf_counter()
        out = score_tokens(recipe.method, model, tokenizer, texts, labels, **recipe.kwargs)
        return out, time.perf_counter() - start

    def save(built, d: Path):
        out, seconds = built
        _write_jsonl(d / "scores.jsonl", [to_record(ts, i) for i, ts in enumerate(out)])
        (d / "timing.json").write_text(json.dumps({"seconds": seconds}))

    def load(d: Path):
        return [from_record(r) for r in _read_jsonl(d / "scores.jsonl")]

    return Stage(recipe.name, recipe.key(), build, save, load)


# --------------------------------------------------------------------------------------------- scoring


def to_record(ts: TokenScores, index: int | None = None) -> dict:
    """A JSON-serialisable dict of one TokenScores (``scores.jsonl`` rows)."""
    rec = {
        "index": index,
        "method": ts.method,
        "text": ts.text,
        "label": ts.label,
        "pred": ts.pred,
        "tokens": ts.tokens,
        "scores": [round(float(x), 7) for x in ts.scores],
        "important": None if ts.important is None else ts.important.astype(int).tolist(),
        "meta": json.loads(json.dumps(ts.meta, default=lambda o: o.item() if hasattr(o, "item") else str(o))),
    }
    return rec


def from_record(rec: dict) -> TokenScores:
    return TokenScores(
        text=rec["text"],
        tokens=rec["tokens"],
        scores=np.asarray(rec["scores"], dtype=np.float32),
        important=rec["important"],
        label=rec["label"],
        pred=rec["pred"],
        method=rec["method"],
        meta=rec.get("meta") or {},
    )


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- outputs


def write_report(
    cfg: ExplorerConfig, results: dict[str, list[TokenScores]], label_names: Sequence[str], metrics: dict | None = None
) -> Path:
    """``report.html``: each example, one highlighted row per method (self-contained page)."""
    from tmlib.highlight import write_html_report

    n = len(next(iter(results.values())))
    n = min(n, cfg.report_examples) if cfg.report_examples else n
    rows, idx = [], []
    for i in range(n):
        for m in cfg.methods:
            rows.append(results[m][i])
            idx.append(i)
    acc = f" · scorer dev accuracy {metrics['dev_accuracy']:.3f}" if metrics else ""
    sub = (
        f"{cfg.model} fine-tuned on {cfg.task}{acc} · {n} {cfg.split} sentences · methods: "
        f"{', '.join(cfg.methods)} · red = supports the predicted class, blue = against"
    )
    return write_html_report(
        Path(cfg.out_dir) / "report.html",
        rows,
        label_names=label_names,
        indices=idx,
        title=f"Token importance on {cfg.task} ({cfg.split})",
        subtitle=sub,
    )


def word_scores(ts: TokenScores) -> list[tuple[str, float]]:
    """Join WordPieces into words; a word's score is the sum of its pieces' scores."""
    from tmlib.selective.stopwords import word_spans

    out = []
    for start, end in word_spans(ts.tokens):
        word = ts.tokens[start] + "".join(t[2:] for t in ts.tokens[start + 1 : end])
        out.append((word, float(np.sum(ts.scores[start:end]))))
    return out


def top_tokens(
    results: dict[str, list[TokenScores]],
    label_names: Sequence[str],
    top_k: int = 12,
    min_count: int = 3,
    drop_stopwords: bool = True,
) -> pd.DataFrame:
    """Words with the highest mean score per explained (predicted) class, per method.

    Columns: method, cls, word, mean_score, count, rank (1 = most important).
    """
    from tmlib.selective.stopwords import is_stopword

    rows = []
    for method, scored in results.items():
        for ts in scored:
            cls = ts.meta.get("target", ts.pred)
            if cls is None:
                continue
            for word, s in word_scores(ts):
                if drop_stopwords and is_stopword(word):
                    continue
                rows.append((method, int(cls), word, s))
    cols = ["method", "cls", "word", "mean_score", "count", "rank"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows, columns=["method", "cls_id", "word", "score"])
    agg = df.groupby(["method", "cls_id", "word"], sort=False)["score"].agg(["mean", "count"]).reset_index()
    agg = agg[agg["count"] >= min_count]
    agg = agg.sort_values(["method", "cls_id", "mean", "word"], ascending=[True, True, False, True])
    agg["rank"] = agg.groupby(["method", "cls_id"]).cumcount() + 1
    agg = agg[agg["rank"] <= top_k]
    names = list(label_names)
    agg["cls"] = [names[c] if 0 <= c < len(names) else str(c) for c in agg["cls_id"]]
    out = agg.rename(columns={"mean": "mean_score"})[cols].reset_index(drop=True)
    out["mean_score"] = out["mean_score"].astype(float).round(6)
    return out


def agreement(results: dict[str, list[TokenScores]]) -> pd.DataFrame:
    """Mean per-text Spearman correlation between every pair of methods (square matrix)."""
    from tmlib.importance.attribution import method_agreement

    return method_agreement(results)


# ---------------------------------------------------------------------------------------------- the experiment


@dataclass
class ExplorerResult:
    model: object
    tokenizer: object
    data: object
    examples: object
    label_names: list[str]
    metrics: dict
    scores: dict[str, list[TokenScores]]
    timing: pd.DataFrame
    top_tokens: pd.DataFrame
    agreement: pd.DataFrame
    summary: pd.DataFrame
    report: Path


class Experiment:
    """Notebook 02 on one run folder: its plan, the one :class:`~tmlib.core.runs.RunStore` of ``cfg.out_dir``, the
    task's data loaded once."""

    def __init__(self, cfg: ExplorerConfig):
        self.cfg = cfg
        self.plan = plan(cfg)
        self.store = RunStore(cfg.out_dir, progress=cfg.progress)
        self._data = None

    def data(self):
        """The scorer's DatasetDict (train capped at ``train_examples``)."""
        if self._data is None:
            self._data = self.plan.data.load()
        return self._data

    def examples(self):
        """The ``n_examples`` sentences that are explained (the first rows of the split)."""
        ds = self.data()[self.cfg.split]
        return ds.select(range(min(self.cfg.n_examples, len(ds))))

    def scorer(self):
        """The fine-tuned (or cached) scorer: ``(model, tokenizer, metrics)``, built by the one fine-tune-and-cache
        helper :func:`tmlib.tasks.finetune.classifier_stage` (``scorer/``)."""
        from tmlib.core.models import load_tokenizer
        from tmlib.tasks.finetune import classifier_stage

        tokenizer = load_tokenizer(self.cfg.model)
        stage = classifier_stage(
            "scorer", self.cfg.model, self.plan.data, self.plan.scorer, data=self.data(), tokenizer=tokenizer,
            seed=self.cfg.seed, desc="scorer",
        )  # fmt: skip
        clf = self.store.get(stage)
        metrics = dict(clf.metrics)
        metrics.setdefault("train_seconds", metrics.get("seconds"))
        return clf.load().eval(), tokenizer, metrics

    def scores(self, model, tokenizer, ds) -> tuple[dict[str, list[TokenScores]], pd.DataFrame]:
        """Score ``ds`` (text + label) with every method (each its own stage). Returns ``({method: [TokenScores per
        example]}, timing)``: one timing row per method (seconds of the run that built it, whether this call reused
        it). Writes ``scores.jsonl`` (one row per example and method)."""
        texts, labels = list(ds["text"]), [int(y) for y in ds["label"]]
        results, timing = {}, []
        for recipe in self.plan.scores:
            stage = scores_stage(replace(recipe, n=len(texts)), model, tokenizer, texts, labels)
            reused = self.store.has(stage)
            results[recipe.method] = self.store.get(stage)
            if recipe.method == "buffer":  # colour margins + delta (red = important) also for older artifacts
                for ts in results[recipe.method]:
                    ts.meta.setdefault("display_offset", float(self.cfg.delta))
            seconds = json.loads((self.store.folder(stage.name) / "timing.json").read_text())["seconds"]
            timing.append(
                {
                    "method": recipe.method,
                    "seconds": round(seconds, 2),
                    "texts": len(texts),
                    "ms_per_text": round(1000 * seconds / max(1, len(texts)), 1),
                    "reused": reused,
                }
            )
        rows = [to_record(results[m][i], i) for i in range(len(texts)) for m in self.cfg.methods]
        _write_jsonl(Path(self.cfg.out_dir) / "scores.jsonl", rows)
        return results, pd.DataFrame(timing)

    def run(self) -> ExplorerResult:
        """Every step: the scorer, the scores, ``report.html`` and the tables (written by :meth:`write`)."""
        from tmlib.tasks.data import label_names as names_of

        cfg = self.cfg
        self.store.write_json("config.json", asdict(cfg))
        names = names_of(self.data())
        model, tokenizer, metrics = self.scorer()
        ds = self.examples()
        results, timing = self.scores(model, tokenizer, ds)
        report = write_report(cfg, results, names, metrics)
        top = top_tokens(results, names, cfg.top_k, cfg.min_count, cfg.drop_stopwords)
        agree = agreement(results)
        summary = summary_table(cfg, metrics, timing, agree, results)
        self.write(top_tokens=top, agreement=agree.rename_axis("method").reset_index(), timing=timing, summary=summary)
        return ExplorerResult(model, tokenizer, self.data(), ds, names, metrics, results, timing, top, agree, summary,
                              report)  # fmt: skip

    def write(self, **tables: pd.DataFrame) -> list[Path]:
        """Each table as ``<name>.csv`` in the run folder."""
        return [self.store.write_csv(f"{name}.csv", table) for name, table in tables.items()]

    def figures(self, res: ExplorerResult) -> dict[str, object]:
        """Draw and save ``top_tokens.png`` and ``agreement.png``; returns the figures."""
        from tmlib.plots import importance as P

        figs = {
            "top_tokens": P.top_tokens(res.top_tokens, method=self.cfg.top_method),
            "agreement": P.agreement_heatmap(res.agreement),
        }
        for name, fig in figs.items():
            self.store.save_figure(f"{name}.png", fig)
        return figs


Config = ExplorerConfig


def summary_table(
    cfg: ExplorerConfig, metrics: dict, timing: pd.DataFrame, agree: pd.DataFrame, results: dict[str, list[TokenScores]]
) -> pd.DataFrame:
    rows = [
        ("scorer_dev_accuracy", round(metrics["dev_accuracy"], 4)),
        ("scorer_test_accuracy", round(metrics["test_accuracy"], 4)),
        ("examples_scored", len(next(iter(results.values())))),
    ]
    for r in timing.itertuples():
        rows.append((f"ms_per_text_{r.method}", r.ms_per_text))
    names = list(agree.index)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            rows.append((f"spearman_{a}_vs_{b}", round(float(agree.loc[a, b]), 4)))
    if "buffer" in results:
        imp = [ts.important for ts in results["buffer"] if ts.important is not None]
        if imp:
            rows.append(("buffer_important_share", round(float(np.concatenate(imp).mean()), 4)))
    if "integrated_gradients" in results:
        deltas = [abs(ts.meta.get("delta", np.nan)) for ts in results["integrated_gradients"]]
        rows.append(("ig_mean_abs_completeness_gap", float(np.nanmean(deltas))))
    return pd.DataFrame(rows, columns=["metric", "value"])


def make_explorer(cfg: ExplorerConfig, res: ExplorerResult, tagger=None):
    """The live :class:`~tmlib.widgets.TokenImportanceExplorer` over the explained examples."""
    from tmlib.widgets import TokenImportanceExplorer

    kw = {m: {k: v for k, v in cfg.method_kwargs(m).items() if k not in ("delta", "progress")} for m in cfg.methods}
    for m in kw:
        kw[m]["progress"] = False
    kw.pop("buffer", None)
    return TokenImportanceExplorer(
        res.model,
        res.tokenizer,
        res.examples,
        label_names=res.label_names,
        methods=cfg.methods,
        method=cfg.top_method,
        delta=cfg.delta,
        tagger=tagger,
        max_length=cfg.max_length,
        method_kwargs=kw,
        seed=cfg.seed,
    )
