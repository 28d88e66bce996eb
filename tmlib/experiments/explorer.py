"""Notebook 02: which tokens does a fine-tuned classifier rely on, by four importance methods?

Steps (each cached as a :class:`~tmlib.runs.RunStore` artifact under ``out_dir``, so a rerun reuses
what is valid):

1. :func:`train_scorer`     fine-tune the scorer classifier (default: packaged MiniLM on MR sentences);
                             artifact ``scorer/`` (``model/`` save_pretrained dir + ``metrics.json``).
2. :func:`score_examples`   score ``n_examples`` sentences of the ``split`` with every method
                             (occlusion, grad x input, integrated gradients, the buffer method);
                             artifact ``scores_<method>/`` per method; all rows also in ``scores.jsonl``.
3. :func:`write_report`     ``report.html``: every example, one highlighted row per method.
4. :func:`top_tokens`       the words with the highest mean score per explained class (aggregated by
                             word over WordPieces, at least ``min_count`` occurrences) -> ``top_tokens.csv``.
5. :func:`agreement`        mean per-text Spearman correlation between methods -> ``agreement.csv``.

:func:`run_explorer` runs them all and writes ``summary.csv`` and ``timing.csv`` too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import ConfigError
from ..importance.types import TokenScores
from ..runs import RunStore, Stage, atomic_write_text

ALL_METHODS = ["occlusion", "grad_x_input", "integrated_gradients", "buffer"]


@dataclass
class ExplorerConfig:
    out_dir: str  # where report.html, CSV, JSON and PNG files are written
    task: str = "mr"  # tmlib.data task the scorer is fine-tuned on
    text_column: str = "text"  # your file's (or hub dataset's) text column
    label_column: str = "label"  # your file's label column
    encoding: str = "utf-8"  # your file's text encoding (e.g. latin-1)
    model: str = "minilm"  # scorer backbone (tmlib.models name)
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
        from ..importance.attribution import METHODS

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


# ------------------------------------------------------------------------------------------------ data


def task_recipe(cfg: ExplorerConfig):
    """The scorer's data: the task with split seed ``cfg.seed``, the train split capped at ``train_examples``
    (class-balanced)."""
    from ..data import TaskRecipe

    return TaskRecipe(
        cfg.task,
        seed=cfg.seed,
        max_train=cfg.train_examples,
        text_column=cfg.text_column,
        label_column=cfg.label_column,
        encoding=cfg.encoding,
    )


def load_data(cfg: ExplorerConfig):
    """The DatasetDict of :func:`task_recipe`."""
    return task_recipe(cfg).load()


def examples(cfg: ExplorerConfig, data):
    """The ``n_examples`` sentences that are explained (the first rows of the split)."""
    ds = data[cfg.split]
    return ds.select(range(min(cfg.n_examples, len(ds))))


# ---------------------------------------------------------------------------------------------- scorer


def _scorer_key(cfg: ExplorerConfig) -> dict:
    keys = ("task", "model", "train_examples", "epochs", "max_steps", "lr", "batch_size", "max_length", "seed")
    return {k: getattr(cfg, k) for k in keys}


def scorer_stage(cfg: ExplorerConfig, data=None, tokenizer=None):
    """The scorer's :class:`~tmlib.runs.Stage` (``scorer/`` in ``out_dir``), built by the one fine-tune-and-cache
    helper :func:`tmlib.finetune.classifier_stage`."""
    from ..finetune import classifier_stage
    from ..training import TrainConfig

    tc = TrainConfig(
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        max_length=cfg.max_length,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    d = data if data is not None else load_data(cfg)
    return classifier_stage(
        "scorer", cfg.model, task_recipe(cfg), tc, data=d, tokenizer=tokenizer, seed=cfg.seed, desc="scorer"
    )


def train_scorer(cfg: ExplorerConfig, data=None, store: RunStore | None = None):
    """Fine-tune (or reuse the cached) scorer in ``store`` (default: the store of ``cfg.out_dir``). Returns
    ``(model, tokenizer, metrics)``."""
    from ..models import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    clf = (store or RunStore(cfg.out_dir)).get(scorer_stage(cfg, data, tokenizer))
    metrics = dict(clf.metrics)
    metrics.setdefault("train_seconds", metrics.get("seconds"))
    return clf.load().eval(), tokenizer, metrics


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


def score_examples(
    cfg: ExplorerConfig, model, tokenizer, ds, store: RunStore | None = None
) -> tuple[dict[str, list[TokenScores]], pd.DataFrame]:
    """Score ``ds`` (text + label) with every method of ``cfg.methods`` (each cached as an artifact).

    Returns ``({method: [TokenScores per example]}, timing)``; timing has one row per method
    (seconds of the run that built the artifact, and whether this call reused it). Writes
    ``scores.jsonl`` (one row per example and method).
    """
    from ..importance.attribution import score_tokens

    store = store or RunStore(cfg.out_dir)
    texts, labels = list(ds["text"]), [int(y) for y in ds["label"]]
    results, timing = {}, []
    for method in cfg.methods:
        key = {
            "scorer": _scorer_key(cfg),
            "method": method,
            "kwargs": cfg.method_kwargs(method),
            "split": cfg.split,
            "n": len(texts),
        }
        built = {}

        def build(ctx, method=method, built=built):
            start = time.perf_counter()
            out = score_tokens(method, model, tokenizer, texts, labels, **cfg.method_kwargs(method))
            built["seconds"] = time.perf_counter() - start
            return out

        def save(out, d: Path, built=built):
            _write_jsonl(d / "scores.jsonl", [to_record(ts, i) for i, ts in enumerate(out)])
            (d / "timing.json").write_text(json.dumps({"seconds": built["seconds"]}))

        def load(d: Path):
            return [from_record(r) for r in _read_jsonl(d / "scores.jsonl")]

        results[method] = store.get(Stage(f"scores_{method}", key, build, save, load))
        if method == "buffer":  # colour margins + delta (red = important) also for artifacts saved without it
            for ts in results[method]:
                ts.meta.setdefault("display_offset", float(cfg.delta))
        seconds = json.loads((store.folder(f"scores_{method}") / "timing.json").read_text())["seconds"]
        timing.append(
            {
                "method": method,
                "seconds": round(seconds, 2),
                "texts": len(texts),
                "ms_per_text": round(1000 * seconds / max(1, len(texts)), 1),
                "reused": not built,
            }
        )
    _write_jsonl(
        Path(cfg.out_dir) / "scores.jsonl",
        [to_record(results[m][i], i) for i in range(len(texts)) for m in cfg.methods],
    )
    return results, pd.DataFrame(timing)


# ---------------------------------------------------------------------------------------------- outputs


def write_report(
    cfg: ExplorerConfig, results: dict[str, list[TokenScores]], label_names: Sequence[str], metrics: dict | None = None
) -> Path:
    """``report.html``: each example, one highlighted row per method (self-contained page)."""
    from ..highlight import write_html_report

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
    from ..importance.stopwords import word_spans

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
    from ..importance.stopwords import is_stopword

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
    from ..importance.attribution import method_agreement

    return method_agreement(results)


# ---------------------------------------------------------------------------------------------- one call


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
    store: RunStore | None = None  # the run folder's store (figures are saved through it)


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


def run_explorer(cfg: ExplorerConfig) -> ExplorerResult:
    """Every step; writes report.html, scores.jsonl, top_tokens.csv, agreement.csv, timing.csv,
    summary.csv and config.json under ``cfg.out_dir`` (figures are the notebook's, via
    :mod:`tmlib.plots.importance`, or :func:`save_figures`)."""
    from ..data import label_names as names_of

    store = RunStore(cfg.out_dir, progress=cfg.progress)  # the run folder's one store
    store.write_json("config.json", asdict(cfg))
    data = load_data(cfg)
    names = names_of(data)
    model, tokenizer, metrics = train_scorer(cfg, data, store)
    ds = examples(cfg, data)
    results, timing = score_examples(cfg, model, tokenizer, ds, store)
    report = write_report(cfg, results, names, metrics)
    top = top_tokens(results, names, cfg.top_k, cfg.min_count, cfg.drop_stopwords)
    agree = agreement(results)
    summary = summary_table(cfg, metrics, timing, agree, results)
    store.write_csv("top_tokens.csv", top)
    store.write_csv("agreement.csv", agree.rename_axis("method").reset_index())
    store.write_csv("timing.csv", timing)
    store.write_csv("summary.csv", summary)
    return ExplorerResult(
        model, tokenizer, data, ds, names, metrics, results, timing, top, agree, summary, report, store
    )


def save_figures(cfg: ExplorerConfig, res: ExplorerResult) -> dict[str, object]:
    """Draw and save ``top_tokens.png`` and ``agreement.png``; returns the figures."""
    from ..plots import importance as P

    store = res.store or RunStore(cfg.out_dir)
    figs = {
        "top_tokens": P.top_tokens(res.top_tokens, method=cfg.top_method),
        "agreement": P.agreement_heatmap(res.agreement),
    }
    for name, fig in figs.items():
        store.save_figure(f"{name}.png", fig)
    return figs


def make_explorer(cfg: ExplorerConfig, res: ExplorerResult, tagger=None):
    """The live :class:`~tmlib.widgets.TokenImportanceExplorer` over the explained examples."""
    from ..widgets import TokenImportanceExplorer

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
