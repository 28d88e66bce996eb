"""Paired comparisons over seeds: the gap between two methods, a paired t test, and a plain sentence.

A seed fixes the head's initialisation and the batch order for every method trained with it, so the
per-seed difference removes that shared noise (the same logic as notebook 01's ``paired_gaps``).

    gaps = paired_gap_table(results, by=["task"], method_col="method", value_col="test_accuracy",
                            pairs=[("mask", "finetune")], scale=100)
    gap_sentence(gaps.iloc[0])   # 'mask − fine-tune = -2.1 ± 3.4 points (p = 0.19, 5 seeds)'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

GAP_COLUMNS = [
    "comparison",
    "a",
    "b",
    "n_seeds",
    "gap_mean",
    "gap_std",
    "wins",
    "losses",
    "t",
    "p",
    "ci95",
    "detectable_gap",
    "verdict",
]
POWER_COLUMNS = ["test_n", "disagreement", "sampling_sd"]  # with per-example predictions (paired_gap_table)
SHORT_NAMES = {"finetune": "fine-tune"}  # how a method is written in a gap sentence (else its name)


def ci_half_width(sd: float, n: int, level: float = 0.95) -> float:
    """Half-width of the ``level`` confidence interval of a mean of ``n`` values with std ``sd``
    (Student t, ``n - 1`` degrees of freedom); NaN for ``n < 2``."""
    from scipy import stats

    if n < 2 or not np.isfinite(sd):
        return float("nan")
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n))


def detectable_gap(sd: float, n: int, alpha: float = 0.05, power: float = 0.8, exact: bool = True) -> float:
    """The smallest true mean gap that a two-sided paired t test on ``n`` seeds with per-seed gap std ``sd``
    detects at level ``alpha`` with probability ``power``.

    ``exact`` (default): from the noncentral t distribution (``scipy.stats.nct``), the gap d at which
    P(|T| > t_{1-alpha/2, n-1}) = ``power`` for T ~ nct(n - 1, d * sqrt(n) / sd), as G*Power computes it.
    ``exact=False``: the normal-shift approximation (t_{1-alpha/2} + t_{power}) * sd / sqrt(n), which understates
    the exact gap by about 5% at 3 seeds and by under 0.2% from 10 seeds on."""
    from scipy import optimize, stats

    if n < 2 or not np.isfinite(sd):
        return float("nan")
    if not alpha < power < 1:
        raise ValueError(f"power must be in (alpha, 1) = ({alpha}, 1), got {power}")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    approx = (crit + stats.t.ppf(power, df)) / np.sqrt(n)  # in units of sd
    if not exact or sd == 0:
        return float(approx * sd)

    def shortfall(nc: float) -> float:
        reach = 1.0 - stats.nct.cdf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
        return (1.0 if np.isnan(reach) else reach) - power

    lo, hi = 0.0, approx * np.sqrt(n)  # the approximation understates: widen until the power is reached
    while shortfall(hi) < 0:
        lo, hi = hi, 1.5 * hi
    nc = optimize.brentq(shortfall, lo, hi, xtol=1e-10)
    return float(nc * sd / np.sqrt(n))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979) of a family of tests, in the input order: sorted ascending,
    the i-th (from 0) of m is multiplied by m - i, made non-decreasing, capped at 1. A test is rejected at family
    level alpha when its adjusted p is below alpha."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or np.isnan(p).any():
        raise ValueError("holm needs a flat list of p-values without NaN (leave untested rows out)")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def power_table(
    sd: Mapping[Any, float],
    seeds: Sequence[int],
    seconds_per_seed: Mapping[Any, float],
    fixed_seconds: float = 0.0,
    alpha: float = 0.05,
    power: float = 0.8,
) -> pd.DataFrame:
    """The design space of a paired comparison: per setting (e.g. a fine-tuning set size) with measured per-seed
    gap std ``sd[setting]`` and cost ``seconds_per_seed[setting]`` (every arm of one seed), and per seed count in
    ``seeds``, the smallest true gap detected with ``power`` at level ``alpha`` (:func:`detectable_gap`) and the
    minutes the design takes (``fixed_seconds``: the shared cost paid once, e.g. pre-training)."""
    rows = []
    for setting, s in sd.items():
        for n in seeds:
            rows.append(
                {
                    "setting": setting,
                    "n_seeds": int(n),
                    "gap_sd": float(s),
                    "detectable_gap": detectable_gap(s, n, alpha=alpha, power=power),
                    "minutes": (fixed_seconds + n * seconds_per_seed[setting]) / 60,
                }
            )
    return pd.DataFrame(rows)


def seeds_needed(sd: float, gap: float, alpha: float = 0.05, power: float = 0.8, max_seeds: int = 10_000) -> int:
    """The fewest seeds whose paired t test detects a true gap ``gap`` with ``power`` (:func:`detectable_gap`)."""
    if gap <= 0 or not np.isfinite(sd):
        raise ValueError(f"gap must be > 0 and sd finite, got gap={gap}, sd={sd}")
    lo, hi = 2, 2
    while detectable_gap(sd, hi, alpha, power) > gap:
        if hi >= max_seeds:
            return max_seeds
        lo, hi = hi, min(hi * 2, max_seeds)
    while lo < hi:  # detectable_gap falls with n: the first n at or below gap
        mid = (lo + hi) // 2
        if detectable_gap(sd, mid, alpha, power) <= gap:
            hi = mid
        else:
            lo = mid + 1
    return hi


def disagreement(pred_a, pred_b) -> float:
    """Share of test examples on which two models predict different classes."""
    a, b = np.asarray(pred_a), np.asarray(pred_b)
    if a.shape != b.shape:
        raise ValueError(f"predictions of different test sets: {a.shape} vs {b.shape}")
    return float((a != b).mean()) if a.size else float("nan")


def paired_gap_table(
    frame: pd.DataFrame,
    by: Sequence[str] | str | None,
    method_col: str,
    value_col: str,
    pairs: Sequence[tuple[str, str]],
    seed_col: str = "seed",
    scale: float = 1.0,
    alpha: float = 0.05,
    predictions: Mapping | None = None,
) -> pd.DataFrame:
    """Per group of ``by`` and per pair ``(a, b)`` of methods: the gap ``a - b`` of ``value_col``, paired by
    ``seed_col`` (seeds present for both only), times ``scale`` (100: accuracy in points).

    Columns: the ``by`` columns, ``comparison`` ("a - b"), ``a``, ``b``, ``n_seeds``, ``gap_mean``,
    ``gap_std`` (over seeds), ``wins`` / ``losses`` (seeds where a is above / below b), the paired t
    statistic ``t`` and its two-sided ``p``, ``ci95`` (half-width of the 95% CI of the mean gap) and
    ``detectable_gap`` (the smallest true gap these seeds detect with 80% power, :func:`detectable_gap`) and
    ``verdict`` ("separated" when p < alpha, else "within noise"). With one seed, or a gap identical
    on every seed (std 0), t, p and ci95 are NaN (nothing to test). Pairs whose methods are absent
    from a group are skipped. Several rows for one (group, method, seed) are averaged.

    ``predictions``: ``(*group values, method, seed) -> predicted classes`` on the group's test set. Then
    ``test_n``, ``disagreement`` (mean over seeds of the share of examples the two models answer differently)
    and ``sampling_sd`` = ``scale * sqrt(disagreement / test_n)``: the part of a seed's gap that comes from
    sampling the test set (compare with ``gap_std``).
    """
    from scipy import stats

    by = [by] if isinstance(by, str) else list(by or [])
    missing = [c for c in [*by, method_col, value_col, seed_col] if c not in frame.columns]
    if missing:
        raise ValueError(f"paired_gap_table: the frame has no column(s) {missing} (has {list(frame.columns)})")
    groups = frame.groupby(by, sort=False) if by else [((), frame)]
    rows = []
    for key, df in groups:
        key = key if isinstance(key, tuple) else (key,)
        wide = df.pivot_table(index=seed_col, columns=method_col, values=value_col, aggfunc="mean")
        for a, b in pairs:
            if a not in wide or b not in wide:
                continue
            d = (scale * (wide[a] - wide[b])).dropna()
            n = len(d)
            mean = float(d.mean()) if n else float("nan")
            sd = float(d.std(ddof=1)) if n > 1 else float("nan")
            if n > 1 and sd > 0:
                t = mean / (sd / np.sqrt(n))
                p = float(2 * stats.t.sf(abs(t), n - 1))
            else:
                t, p = float("nan"), float("nan")
            row = {
                **dict(zip(by, key)),
                "comparison": f"{a} - {b}",
                "a": a,
                "b": b,
                "n_seeds": n,
                "gap_mean": mean,
                "gap_std": sd,
                "wins": int((d > 0).sum()),
                "losses": int((d < 0).sum()),
                "t": float(t),
                "p": p,
                "ci95": ci_half_width(sd, n) if n > 1 and sd > 0 else float("nan"),
                "detectable_gap": detectable_gap(sd, n) if sd > 0 else float("nan"),
                "verdict": "separated" if p < alpha else "within noise",
            }
            if predictions is not None:
                pairs_ = [(predictions.get((*key, a, s)), predictions.get((*key, b, s))) for s in d.index]
                pairs_ = [(x, y) for x, y in pairs_ if x is not None and y is not None]
                dis = [disagreement(x, y) for x, y in pairs_]
                n_test = len(pairs_[0][0]) if pairs_ else 0
                row["test_n"] = n_test
                row["disagreement"] = float(np.mean(dis)) if dis else float("nan")
                row["sampling_sd"] = scale * float(np.sqrt(row["disagreement"] / n_test)) if n_test else float("nan")
            rows.append(row)
    cols = [*by, *GAP_COLUMNS, *(POWER_COLUMNS if predictions is not None else [])]
    return pd.DataFrame(rows, columns=cols)


def gap_sentence(row: Mapping | pd.Series, names: Mapping[str, str] | None = None, unit: str = "points") -> str:
    """One plain sentence for a :func:`paired_gap_table` row:
    ``"mask − fine-tune = -2.1 ± 3.4 points (p = 0.19, 5 seeds)"`` (± the 95% CI half-width)."""
    names = {**SHORT_NAMES, **(names or {})}
    a, b = names.get(row["a"], row["a"]), names.get(row["b"], row["b"])
    n = int(row["n_seeds"])
    ci = row["ci95"]
    ci_txt = f" ± {ci:.1f}" if np.isfinite(ci) else (" ± 0.0" if n > 1 else "")
    p = row["p"]
    p_txt = (
        "p = n/a"
        if not np.isfinite(p)
        else ("p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.01 else f"p = {p:.2f}")
    )
    return f"{a} \u2212 {b} = {row['gap_mean']:+.1f}{ci_txt} {unit} ({p_txt}, {n} seed{'s' if n != 1 else ''})"


def compare_arms(
    arms: Mapping[str, pd.DataFrame],
    by: Sequence[str] = ("task", "method"),
    value_col: str = "test_accuracy",
    seed_col: str = "seed",
    scale: float = 100.0,
) -> pd.DataFrame:
    """Two runs of the same experiment that differ in one setting (e.g. ``{"bf16": ..., "fp32": ...}``, each a
    notebook-03 ``results.csv``), compared per group of ``by``: the gap ``first - second`` of ``value_col``
    paired by seed (:func:`paired_gap_table` columns plus ``sentence``), and, where the frames have an ``lr``
    column, the lr each arm trained with (``lr_<arm>``: a tuned pipeline may choose differently)."""
    if len(arms) != 2:
        raise ValueError(f"compare_arms takes exactly two arms, got {len(arms)}: {list(arms)}")
    (na, a), (nb, b) = arms.items()
    by = list(by)
    for name, df in ((na, a), (nb, b)):
        missing = [c for c in [*by, value_col, seed_col] if c not in df.columns]
        if missing:
            raise ValueError(f"compare_arms: arm {name!r} has no column(s) {missing} (has {list(df.columns)})")
    both = pd.concat([a.assign(_arm=na), b.assign(_arm=nb)], ignore_index=True)
    table = paired_gap_table(
        both, by=by, method_col="_arm", value_col=value_col, pairs=[(na, nb)], seed_col=seed_col, scale=scale
    )
    table["sentence"] = [gap_sentence(r) for _, r in table.iterrows()]
    if "lr" in a.columns and "lr" in b.columns and not table.empty:
        for name, df in ((na, a), (nb, b)):
            lrs = (
                df.groupby(by)["lr"]
                .agg(lambda s: "/".join(f"{v:g}" for v in sorted(set(s.dropna()))))
                .rename(f"lr_{name}")
            )
            table = table.merge(lrs.reset_index(), on=by, how="left")
    return table
