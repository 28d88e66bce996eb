"""Tables of the selective-masking experiment: buffer/corpus label rates, accuracy summaries, paired
gaps with a t test, the accuracy-vs-TaskPT-steps curve and the pre-training compute per condition.
Pure functions of data frames (nothing here reads or writes files)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tmlib.core.stats import detectable_gap  # noqa: F401 - re-exported by tmlib.experiments.selective
from tmlib.experiments.selective.config import TASKPT_METHODS

FAILED_MARGIN = 0.05  # a run within this of the dev majority-class rate is flagged failed (~2 binomial std on 400 dev)


def flag_failed(results: pd.DataFrame, dev_labels, margin: float = FAILED_MARGIN) -> pd.Series:
    """A degenerate fine-tuning run (Mosbach et al. 2021): dev accuracy no better than always answering the dev
    set's majority class, plus ``margin``."""
    majority = float(pd.Series(list(dev_labels)).value_counts(normalize=True).max())
    return results["dev_accuracy"] <= majority + margin


def train_flops(params: int, tokens: float, passes: float = 1.0) -> float:
    """Training FLOPs of a transformer: 6 per parameter per token (forward 2, backward 4; Kaplan et al. 2020),
    ``params`` the parameters touched per token (the embedding matrix is a lookup), ``tokens`` per pass."""
    return 6.0 * params * tokens * passes


def forward_flops(params: int, tokens: float) -> float:
    """Inference FLOPs: 2 per parameter per token."""
    return 2.0 * params * tokens


def buffer_summary(scores: dict) -> pd.DataFrame:
    rows = []
    for split, ss in scores.items():
        correct = [s for s in ss if s.correct]
        tokens = sum(len(s.tokens) for s in correct)
        imp = sum(int(s.important.sum()) for s in correct)
        rows.append(
            {
                "split": split,
                "sentences": len(ss),
                "scorer_correct": len(correct),
                "important_tokens": imp,
                "important_rate": imp / max(1, tokens),
                "no_important_token": sum(int(s.important.sum() == 0) for s in correct),
            }
        )
    return pd.DataFrame(rows)


def corpus_summary(ds) -> pd.DataFrame:
    imp = [np.asarray(x) for x in ds["important"]]
    n_tok = sum(len(x) for x in imp)
    return pd.DataFrame(
        [
            {
                "sentences": len(ds),
                "tokens": n_tok,
                "important_rate": sum(int(x.sum()) for x in imp) / max(1, n_tok),
                "sentences_without_important": sum(int(x.sum() == 0) for x in imp),
            }
        ]
    )


def threshold_table(ds, tokenizer, thresholds: dict[str, float], stopwords: str = "spacy") -> pd.DataFrame:
    """What the tagger's decision threshold does to the labelled corpus ``ds`` (``token_ids``, ``importance``),
    from its stored P(important): per named threshold (e.g. ``{"argmax (official)": 0.5, "dev F1": 0.2}``), the
    share of important tokens and of sentences with no important token (TaskPT masks nothing in those under the
    official no-fallback rule), stop words forced to 0 as when the corpus was labelled."""
    from tmlib.selective.tagger import token_labels

    rows = []
    for name, t in thresholds.items():
        labels = [
            token_labels(tokenizer, ids, np.asarray(p), t, stopwords)
            for ids, p in zip(ds["token_ids"], ds["importance"])
        ]
        n_tok = sum(len(x) for x in labels)
        rows.append(
            {
                "threshold": name,
                "value": float(t),
                "important_rate": sum(int(x.sum()) for x in labels) / max(1, n_tok),
                "sentences_without_important": sum(int(x.sum() == 0) for x in labels) / max(1, len(labels)),
            }
        )
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean / std over seeds of test (and dev) accuracy per GenePT budget and condition (the ``final``
    rows when the frame has that column: GenePT only and each TaskPT run's selected checkpoint)."""
    if "final" in results:
        results = results[results["final"]]
    order = {m: i for i, m in enumerate(("genept",) + TASKPT_METHODS)}
    g = results.groupby(["genept_steps", "method", "taskpt_steps"], as_index=False)
    out = g.agg(
        test_mean=("test_accuracy", "mean"),
        test_std=("test_accuracy", "std"),
        dev_mean=("dev_accuracy", "mean"),
        dev_std=("dev_accuracy", "std"),
        n_seeds=("seed", "count"),
        n_failed=("failed", "sum"),
    )
    out["condition"] = out["method"].map(
        {
            "genept": "GenePT only",
            "selective": "+TaskPT selective",
            "random": "+TaskPT random (same count)",
            "random15": "+TaskPT random 15%",
        }
    )
    out = out.sort_values(["genept_steps", "method"], key=lambda s: s.map(order) if s.name == "method" else s)
    return out.fillna({"test_std": 0.0, "dev_std": 0.0}).reset_index(drop=True)


PAIRS = [
    ("selective", "random"),
    ("selective", "genept"),
    ("random", "genept"),
    ("random15", "genept"),
    ("selective", "random15"),
]


PRIMARY = ("selective - random", "random - genept")  # named before every run; the other comparisons explore


def paired_gaps(
    results: pd.DataFrame,
    drop_failed: bool = False,
    predictions: dict | None = None,
    by: tuple[str, ...] = ("genept_steps",),
) -> pd.DataFrame:
    """Per GenePT budget (per group of ``by``), the test-accuracy gap of each comparison in points, paired by
    fine-tuning seed
    (:func:`tmlib.core.stats.paired_gap_table`: ``gap_mean`` / ``gap_std``, ``wins``, paired t and p, ``ci95``,
    ``detectable_gap`` (80% power), ``verdict``; with ``predictions`` ``(genept_steps, method, seed) -> test
    classes``, keys ordered as ``by``, also the test-sampling term ``sampling_sd``).

    A seed fixes the classifier head's init and the batch order for every checkpoint, so the per-seed
    difference removes that shared noise. ``drop_failed``: leave out the seeds where either side's run is
    flagged ``failed`` (stuck at the majority class)."""
    from tmlib.core.stats import paired_gap_table

    final = results[results["final"]] if "final" in results else results
    parts = []
    for a, b in PAIRS:
        df = final[final["method"].isin([a, b])]
        table = paired_gap_table(
            df,
            by=list(by),
            method_col="method",
            value_col="test_accuracy",
            pairs=[(a, b)],
            scale=100,
            predictions=predictions,
        )
        if drop_failed and "failed" in df and not table.empty:
            bad = df.groupby([*by, "seed"])["failed"].transform("max").astype(bool)
            kept = paired_gap_table(
                df[~bad],
                by=list(by),
                method_col="method",
                value_col="test_accuracy",
                pairs=[(a, b)],
                scale=100,
                predictions=predictions,
            ).set_index(list(by))
            # a budget whose every seed failed keeps its row: no seeds, nothing to test
            empty = table.assign(
                n_seeds=0, wins=0, losses=0, **{c: float("nan") for c in table.columns if table[c].dtype.kind == "f"}
            )
            table = kept.combine_first(empty.set_index(list(by))).reset_index()[table.columns]
        parts.append(table)
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True).sort_values(list(by), kind="stable").reset_index(drop=True)


def budget_gaps(results: pd.DataFrame, predictions: dict | None = None) -> pd.DataFrame:
    """The budget curve's paired gaps (:meth:`Experiment.budget_results`): every comparison per GenePT and TaskPT
    budget, all runs and failed runs dropped, with the TaskPT passes and the primary tests Holm-corrected together
    (:func:`with_holm`: both primary comparisons at every TaskPT budget form one family)."""
    by = ("genept_steps", "taskpt_budget")
    gaps = pd.concat(
        [
            paired_gaps(results, predictions=predictions, by=by).assign(runs="all"),
            paired_gaps(results, drop_failed=True, predictions=predictions, by=by).assign(runs="failed dropped"),
        ],
        ignore_index=True,
    )
    passes = results.groupby("taskpt_budget")["taskpt_passes"].first()
    return with_holm(gaps.assign(taskpt_passes=gaps["taskpt_budget"].map(passes)))


def with_holm(gaps: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """``gaps`` (:func:`paired_gaps`, ``runs`` "all" and "failed dropped") with the primary tests marked: the
    :data:`PRIMARY` comparisons at the smallest GenePT budget (every TaskPT budget of a budget curve), all runs.
    ``p_holm`` is their Holm-adjusted p (Holm 1979, over the primary tests of this table; NaN elsewhere), and
    ``verdict`` reads it: "separated (Holm)" when below ``alpha``; an exploratory row says "exploratory: p < 0.05"
    or "within noise" from its raw ``p``, which every row keeps."""
    from tmlib.core.stats import holm

    out = gaps.copy()
    if out.empty:
        return out.assign(primary=pd.Series(dtype=bool), p_holm=pd.Series(dtype=float))
    runs = out["runs"] if "runs" in out else pd.Series("all", index=out.index)
    out["primary"] = (
        out["comparison"].isin(PRIMARY) & (out["genept_steps"] == out["genept_steps"].min()) & (runs == "all")
    )
    out["p_holm"] = float("nan")
    tested = out["primary"] & out["p"].notna()
    out.loc[tested, "p_holm"] = holm(out.loc[tested, "p"].to_numpy())
    out["verdict"] = np.where(
        out["primary"],
        np.where(out["p_holm"] < alpha, "separated (Holm)", "within noise"),
        np.where(out["p"] < alpha, "exploratory: p < 0.05", "within noise"),
    )
    return out


def accuracy_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's table: rows = GenePT budget, columns = condition, cells = 'mean ± std' (test, %)."""
    s = summary.assign(
        cell=lambda d: (100 * d.test_mean).map("{:.2f}".format) + " ± " + (100 * d.test_std).map("{:.2f}".format)
    )
    return s.pivot(index="genept_steps", columns="condition", values="cell")


def curve_summary(curve: pd.DataFrame) -> pd.DataFrame:
    """Accuracy vs TaskPT steps: step 0 is GenePT-only, shared by every method."""
    parts = []
    for m in [x for x in curve["method"].unique() if x != "genept"]:
        base = curve[curve["method"] == "genept"].assign(method=m)
        parts.append(pd.concat([base, curve[curve["method"] == m]]))
    both = pd.concat(parts)
    return (
        both.groupby(["genept_steps", "method", "taskpt_steps"], as_index=False)
        .agg(
            test_mean=("test_accuracy", "mean"),
            test_std=("test_accuracy", "std"),
            dev_mean=("dev_accuracy", "mean"),
            n_seeds=("seed", "count"),
        )
        .fillna({"test_std": 0.0})
    )


def importance_examples(corpus, tokenizer, n: int = 8) -> pd.DataFrame:
    """A few corpus sentences with the tagger's important tokens in brackets."""
    rows = []
    for r in corpus.select(range(min(n, len(corpus)))):
        toks = tokenizer.convert_ids_to_tokens(r["token_ids"])
        rows.append({"sentence": " ".join(f"[{t}]" if i else t for t, i in zip(toks, r["important"]))})
    return pd.DataFrame(rows)


def compute_split(compute: pd.DataFrame, threads: int) -> dict:
    """Compute per stage and per group (GenePT / importance pipeline / TaskPT / fine-tune)."""
    return {
        "stages": compute.to_dict(orient="records"),
        "torch_threads": threads,
        "groups_seconds": compute.groupby("group")["seconds"].sum().to_dict(),
        "groups_flops": compute.groupby("group")["flops"].sum().to_dict(),
    }


def condition_costs(compute: pd.DataFrame, genept_steps, methods) -> pd.DataFrame:
    """Pre-training compute behind each condition (fine-tuning excluded): GenePT up to its budget, plus
    for TaskPT conditions the importance pipeline (selective only) and that TaskPT run. The paper's
    claim in these units: GenePT(small) + selective TaskPT vs GenePT(large)."""
    df = compute
    imp = df[df["group"] == "importance"][["seconds", "flops"]].sum()
    rows = []
    for g in genept_steps:
        gen = df[(df["group"] == "GenePT") & (df["steps"] <= g)][["seconds", "flops"]].sum()
        rows.append(
            {"genept_steps": g, "method": "genept", "pretrain_seconds": gen["seconds"], "pretrain_flops": gen["flops"]}
        )
        for m in methods:
            tp = df[(df["group"] == "TaskPT") & (df["genept_steps"] == g) & (df["method"] == m)][
                ["seconds", "flops"]
            ].sum()
            extra = imp if m == "selective" else 0 * imp
            rows.append(
                {
                    "genept_steps": g,
                    "method": m,
                    "pretrain_seconds": gen["seconds"] + extra["seconds"] + tp["seconds"],
                    "pretrain_flops": gen["flops"] + extra["flops"] + tp["flops"],
                }
            )
    return pd.DataFrame(rows)


def probe_table(probe: pd.DataFrame) -> pd.DataFrame:
    """Held-out MLM top-1 (%) and loss per checkpoint (rows) and domain (columns)."""
    p = probe.assign(top1_pct=100 * probe["top1"])
    return p.pivot_table(
        index=["stage", "genept_steps", "method", "taskpt_steps"], columns="domain", values=["top1_pct", "loss"]
    ).round(2)
