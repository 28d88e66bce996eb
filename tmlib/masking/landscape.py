"""Loss landscapes by interpolation between solutions, over state dicts.

Zhao et al. (2020) evaluate loss and accuracy along the straight line between a masked and a
fine-tuned model, ``theta(g) = (1 - g) * theta_A + g * theta_B`` for ``g`` in [0, 1] and a little
beyond, and find nearly constant accuracy (the minima are linearly connected). This module does that
for any two models of the same architecture, plus the 2-D plane through three models, and a trained
quadratic Bezier curve between two models (mode connectivity, Garipov et al. 2018: :func:`train_bezier`,
:func:`bezier_path`).

* Inputs are never mutated: every point is written in place into ONE scratch copy of the template
  model (``torch.lerp(..., out=...)``), so the cost per point is one pass over the weights plus the
  evaluation, with no model copies.
* Evaluation reuses tokenised, padded, length-sorted batches (:class:`tmlib.tasks.classify.EvalBatches`).
* Any input may be an ``nn.Module`` or a state dict. For a masked model pass its effective weights,
  ``W * mask`` with the plain model's keys (``tmlib.masking.effective_state_dict(model)``).
* Float tensors are interpolated; non-float buffers (position ids, token type ids) must be equal in
  all inputs and are copied from the first.

    from tmlib.masking.landscape import linear_path, plane
    df = linear_path(template, masked_state, finetuned_model, {"dev": dev, "test": test})
    pl = plane(template, pretrained, masked_state, finetuned_model, {"dev": dev}, resolution=9)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from tmlib.core.training import TrainConfig
from tmlib.tasks.classify import EvalBatches, evaluate_classifier

State = Mapping[str, torch.Tensor]
ModelOrState = torch.nn.Module | State

DEFAULT_GAMMAS = tuple(float(g) + 0.0 for g in np.round(np.linspace(-0.2, 1.2, 15), 6))  # step 0.1, hits 0 and 1


class LandscapeError(ValueError):
    """Inputs that cannot be interpolated: different architectures, keys, shapes or buffers."""


# ----------------------------------------------------------------------------------------- state dicts


def as_state(x: ModelOrState, name: str = "input") -> dict[str, torch.Tensor]:
    """A read-only view of a model's (or a state dict's) tensors, detached, on the CPU/device they live on.

    No copy is made; callers in this module only read these tensors.
    """
    if isinstance(x, torch.nn.Module):
        return {k: v.detach() for k, v in x.state_dict().items()}
    if isinstance(x, Mapping):
        bad = [k for k, v in x.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise LandscapeError(f"{name}: state dict values must be tensors; {bad[:3]} are not")
        return {k: v.detach() for k, v in x.items()}
    raise LandscapeError(
        f"{name}: expected an nn.Module or a state dict (mapping of name -> tensor), got {type(x).__name__}"
    )


def _is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def check_states(states: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str]) -> None:
    """Same keys, same shapes, same dtypes kind, equal non-float buffers; else a :class:`LandscapeError`."""
    ref, ref_name = states[0], names[0]
    for st, nm in zip(states[1:], names[1:]):
        missing, extra = sorted(set(ref) - set(st)), sorted(set(st) - set(ref))
        if missing or extra:
            raise LandscapeError(
                f"{ref_name} and {nm} have different parameter names (missing in {nm}: {missing[:5]}, "
                f"extra in {nm}: {extra[:5]}); interpolate models of the same architecture, and pass a masked "
                f"model's effective weights (tmlib.masking.effective_state_dict) rather than the masked module"
            )
        for k, a in ref.items():
            b = st[k]
            if a.shape != b.shape:
                raise LandscapeError(
                    f"{k}: shape {tuple(a.shape)} in {ref_name} but {tuple(b.shape)} in {nm}; "
                    f"the models have different architectures or heads (check num_labels)"
                )
            if _is_float(a) != _is_float(b):
                raise LandscapeError(f"{k}: dtype {a.dtype} in {ref_name} but {b.dtype} in {nm}")
            if not _is_float(a) and not torch.equal(a, b.to(a.device)):
                raise LandscapeError(
                    f"non-float buffer {k} differs between {ref_name} and {nm}; it cannot be "
                    f"interpolated (token/position ids must be the same in both models)"
                )


def interpolate_states(a: ModelOrState, b: ModelOrState, g: float) -> dict[str, torch.Tensor]:
    """``(1 - g) * A + g * B`` for every float tensor; non-float buffers copied from ``A`` (checked equal).

    Returns new tensors (inputs are not modified). ``g = 0`` gives exactly ``A`` and ``g = 1`` exactly
    ``B`` (``torch.lerp`` is exact at both ends).
    """
    sa, sb = as_state(a, "A"), as_state(b, "B")
    check_states([sa, sb], ["A", "B"])
    g = float(g)
    return {k: (torch.lerp(v, sb[k].to(v), g) if _is_float(v) else v.clone()) for k, v in sa.items()}


# ----------------------------------------------------------------------------------------- scratch model


class _Scratch:
    """One private copy of the template whose tensors are overwritten in place for every point."""

    def __init__(self, template: torch.nn.Module, device: torch.device | str | None, reference: State):
        if not isinstance(template, torch.nn.Module):
            raise LandscapeError(
                f"model_template must be an nn.Module (the architecture to evaluate), got {type(template).__name__}"
            )
        self.model = copy.deepcopy(template)
        if device is not None:
            self.model.to(device)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # state_dict() tensors share storage with the module's parameters and buffers
        self.targets = self.model.state_dict()
        missing, extra = sorted(set(reference) - set(self.targets)), sorted(set(self.targets) - set(reference))
        if missing or extra:
            raise LandscapeError(
                f"model_template does not match the states: keys only in the states {missing[:5]}, "
                f"only in the template {extra[:5]}; build the template with the same architecture "
                f"and head size"
            )
        for k, v in reference.items():
            if self.targets[k].shape != v.shape:
                raise LandscapeError(
                    f"model_template {k} has shape {tuple(self.targets[k].shape)}, the states "
                    f"{tuple(v.shape)}; check the architecture and num_labels"
                )
        self.device = next(iter(self.targets.values())).device

    def on_device(self, state: State) -> dict[str, torch.Tensor]:
        """Inputs moved (once) to the scratch model's device and dtype; no copy when already there."""
        return {
            k: v.to(device=self.device, dtype=self.targets[k].dtype) if _is_float(v) else v.to(self.device)
            for k, v in state.items()
        }

    @torch.no_grad()
    def load(self, fill: Callable[[str, torch.Tensor], None]) -> torch.nn.Module:
        for k, t in self.targets.items():
            fill(k, t)
        return self.model


def _eval_dict(eval_batches) -> dict[str, EvalBatches]:
    if isinstance(eval_batches, Mapping):
        if not eval_batches:
            raise LandscapeError("eval_batches is empty; pass {'dev': EvalBatches(...), 'test': ...}")
        return dict(eval_batches)
    if hasattr(eval_batches, "batches"):
        return {"dev": eval_batches}
    raise LandscapeError(
        "eval_batches must be a tmlib.tasks.classify.EvalBatches or a dict split -> EvalBatches "
        f"(tokenise once, reuse for every point); got {type(eval_batches).__name__}"
    )


def _check_gammas(gammas) -> list[float]:
    gs = [float(g) for g in (DEFAULT_GAMMAS if gammas is None else gammas)]
    if not gs:
        raise LandscapeError("gammas is empty; pass a grid such as numpy.linspace(-0.2, 1.2, 15)")
    if not all(np.isfinite(gs)):
        raise LandscapeError(f"gammas must be finite numbers, got {gs}")
    return gs


def gamma_grid(lo: float = -0.2, hi: float = 1.2, n: int = 15) -> list[float]:
    """``n`` evenly spaced interpolation coefficients on ``[lo, hi]``, with 0 and 1 always included."""
    if n < 2 or not lo < hi:
        raise LandscapeError(f"need n >= 2 and lo < hi, got n={n}, lo={lo}, hi={hi}")
    grid = {float(g) + 0.0 for g in np.round(np.linspace(lo, hi, n), 6)}  # + 0.0: no "-0.0" in tables
    grid |= {g for g in (0.0, 1.0) if lo <= g <= hi}
    return sorted(grid)


# ----------------------------------------------------------------------------------------- 1-D paths


@torch.no_grad()
def linear_path(
    model_template: torch.nn.Module,
    state_a: ModelOrState,
    state_b: ModelOrState,
    eval_batches,
    gammas: Sequence[float] | None = None,
    *,
    device: torch.device | str | None = None,
    evaluate: Callable[[torch.nn.Module, EvalBatches], dict] = evaluate_classifier,
    progress: bool = True,
    desc: str = "interpolate",
) -> pd.DataFrame:
    """Loss and accuracy along ``theta(g) = (1 - g) * A + g * B`` on every split of ``eval_batches``.

    ``model_template`` gives the architecture (deep-copied once; never modified); ``state_a`` and
    ``state_b`` are models or state dicts with the template's keys. ``eval_batches``: an
    :class:`EvalBatches` or a dict ``{"dev": ..., "test": ...}``. ``gammas`` defaults to
    :data:`DEFAULT_GAMMAS` (-0.2 .. 1.2 in steps of 0.1). Returns DataFrame(gamma, split, loss, accuracy).
    """
    gs = _check_gammas(gammas)
    splits = _eval_dict(eval_batches)
    sa, sb = as_state(state_a, "state_a"), as_state(state_b, "state_b")
    check_states([sa, sb], ["state_a", "state_b"])
    scratch = _Scratch(model_template, device, sa)
    sa, sb = scratch.on_device(sa), scratch.on_device(sb)
    rows = []
    bar = tqdm(total=len(gs) * len(splits), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for g in gs:

        def fill(k, t, g=g):
            if _is_float(t):
                torch.lerp(sa[k], sb[k], g, out=t)
            else:
                t.copy_(sa[k])

        model = scratch.load(fill)
        for split, batches in splits.items():
            m = evaluate(model, batches)
            rows.append({"gamma": g, "split": split, "loss": float(m["loss"]), "accuracy": float(m["accuracy"])})
            bar.update(1)
    bar.close()
    return pd.DataFrame(rows, columns=["gamma", "split", "loss", "accuracy"])


# ----------------------------------------------------------------------------------------- 2-D plane


@dataclass
class PlaneResult:
    """A 2-D slice through three models.

    ``grid``: DataFrame(alpha, beta, split, loss, accuracy) on a regular ``alpha x beta`` grid;
    ``points``: DataFrame(name, alpha, beta, split, loss, accuracy) for the three models at their
    true coordinates; ``coords``: name -> (alpha, beta). Coordinates are Euclidean (in weight-space
    units): the origin model at (0, 0), the x model at (|x - o|, 0), the y model at (<y-o, e1>, |y'|).
    """

    grid: pd.DataFrame
    points: pd.DataFrame
    coords: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """Grid and model points in one table (``point`` is '' for grid rows, the model name otherwise)."""
        g = self.grid.assign(point="")
        return pd.concat([g, self.points.rename(columns={"name": "point"})], ignore_index=True)[
            ["point", "alpha", "beta", "split", "loss", "accuracy"]
        ]


def plane_basis(origin: State, x: State, y: State) -> tuple[dict, dict, dict[str, tuple[float, float]]]:
    """Gram–Schmidt orthonormal basis ``(e1, e2)`` of the plane through three states (float keys only).

    Returns ``e1``, ``e2`` (float32 dicts, same devices as ``origin``) and the three models' coordinates
    ``{"origin": (0, 0), "x": (|u|, 0), "y": (<v, e1>, |v - <v, e1> e1|)}`` with ``u = x - o``, ``v = y - o``.
    Inner products are accumulated in float64.
    """
    keys = [k for k, v in origin.items() if _is_float(v)]
    u = {k: x[k].to(origin[k]) - origin[k] for k in keys}
    v = {k: y[k].to(origin[k]) - origin[k] for k in keys}

    def dot(p, q):
        return sum(float((p[k].double() * q[k].double()).sum()) for k in keys)

    nu = dot(u, u) ** 0.5
    if nu == 0:
        raise LandscapeError("the origin and x models are identical; a plane needs three distinct models")
    e1 = {k: u[k] / nu for k in keys}
    vx = dot(v, e1)
    w = {k: v[k] - vx * e1[k] for k in keys}
    nw = dot(w, w) ** 0.5
    if nw <= 1e-5 * max(nu, dot(v, v) ** 0.5):  # float32 rounding leaves ~1e-7
        raise LandscapeError(
            "the three models are (nearly) collinear; the plane through them is undefined — use linear_path instead"
        )
    e2 = {k: w[k] / nw for k in keys}
    return e1, e2, {"origin": (0.0, 0.0), "x": (nu, 0.0), "y": (vx, nw)}


def plane_axes(
    coords: Mapping[str, tuple[float, float]], resolution: int | tuple[int, int] = 9, margin: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Regular alpha/beta axes covering the three models plus ``margin`` times the span on each side."""
    nx, ny = (resolution, resolution) if isinstance(resolution, int) else resolution
    if nx < 2 or ny < 2:
        raise LandscapeError(f"resolution must be >= 2 points per axis, got {resolution}")
    if margin < 0:
        raise LandscapeError(f"margin must be >= 0, got {margin}")
    a = np.array([c[0] for c in coords.values()])
    b = np.array([c[1] for c in coords.values()])
    sa, sb = a.max() - a.min(), b.max() - b.min()
    return (
        np.linspace(a.min() - margin * sa, a.max() + margin * sa, nx),
        np.linspace(b.min() - margin * sb, b.max() + margin * sb, ny),
    )


@torch.no_grad()
def plane(
    model_template: torch.nn.Module,
    state_origin: ModelOrState,
    state_x: ModelOrState,
    state_y: ModelOrState,
    eval_batches,
    *,
    resolution: int | tuple[int, int] = 9,
    margin: float = 0.2,
    names: tuple[str, str, str] = ("origin", "x", "y"),
    device: torch.device | str | None = None,
    evaluate: Callable[[torch.nn.Module, EvalBatches], dict] = evaluate_classifier,
    progress: bool = True,
    desc: str = "plane",
) -> PlaneResult:
    """Loss and accuracy on the 2-D plane through three models, ``theta = o + alpha * e1 + beta * e2``.

    ``(e1, e2)`` is the Gram–Schmidt basis of ``(x - o, y - o)`` (:func:`plane_basis`), so the three
    models sit at their true positions and distances. The grid covers them with ``margin`` (a fraction
    of the span) on each side, ``resolution`` points per axis; the three models are also evaluated at
    their exact coordinates (``PlaneResult.points``). Inputs are never modified.
    """
    splits = _eval_dict(eval_batches)
    so, sx, sy = (as_state(s, n) for s, n in zip((state_origin, state_x, state_y), names))
    check_states([so, sx, sy], list(names))
    scratch = _Scratch(model_template, device, so)
    so, sx, sy = scratch.on_device(so), scratch.on_device(sx), scratch.on_device(sy)
    e1, e2, c = plane_basis(so, sx, sy)
    coords = {names[0]: c["origin"], names[1]: c["x"], names[2]: c["y"]}
    alphas, betas = plane_axes(coords, resolution, margin)
    todo = [("", float(a), float(b)) for b in betas for a in alphas] + [(n, *coords[n]) for n in names]
    grid_rows, point_rows = [], []
    bar = tqdm(total=len(todo) * len(splits), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for name, a, b in todo:
        exact = {names[0]: so, names[1]: sx, names[2]: sy}.get(name)

        def fill(k, t, a=a, b=b, exact=exact):
            if exact is not None or not _is_float(t):
                t.copy_((so if exact is None else exact)[k])  # a model at its own coordinates: its exact weights
            else:
                torch.add(so[k], e1[k], alpha=a, out=t)
                t.add_(e2[k], alpha=b)

        model = scratch.load(fill)
        for split, batches in splits.items():
            m = evaluate(model, batches)
            row = {"alpha": a, "beta": b, "split": split, "loss": float(m["loss"]), "accuracy": float(m["accuracy"])}
            (point_rows.append({"name": name, **row}) if name else grid_rows.append(row))
            bar.update(1)
    bar.close()
    return PlaneResult(
        grid=pd.DataFrame(grid_rows, columns=["alpha", "beta", "split", "loss", "accuracy"]),
        points=pd.DataFrame(point_rows, columns=["name", "alpha", "beta", "split", "loss", "accuracy"]),
        coords=coords,
    )


def plane_point(
    state_origin: ModelOrState, state_x: ModelOrState, state_y: ModelOrState, alpha: float, beta: float
) -> dict[str, torch.Tensor]:
    """The state at plane coordinates ``(alpha, beta)`` (new tensors; for checks and custom evaluation)."""
    so, sx, sy = as_state(state_origin, "origin"), as_state(state_x, "x"), as_state(state_y, "y")
    check_states([so, sx, sy], ["origin", "x", "y"])
    e1, e2, _ = plane_basis(so, sx, sy)
    return {k: (v + alpha * e1[k] + beta * e2[k]) if _is_float(v) else v.clone() for k, v in so.items()}


# ----------------------------------------------------------------------------------------- summaries


def path_summary(df: pd.DataFrame, split: str = "test", metric: str = "accuracy") -> dict:
    """Endpoints and the worst point on ``[0, 1]`` of one path (a :func:`linear_path` frame).

    ``max_drop`` = min(endpoint metrics) - min(metric on [0, 1]) (>= 0; in the metric's units);
    ``within_1pt`` says whether accuracy never falls more than 1 point (0.01) below the lower endpoint.
    """
    d = df[df["split"] == split].sort_values("gamma")
    if d.empty:
        raise LandscapeError(f"no rows for split {split!r}; available: {sorted(df['split'].unique())}")
    ends = {g: d.loc[np.isclose(d["gamma"], g), metric] for g in (0.0, 1.0)}
    if any(e.empty for e in ends.values()):
        raise LandscapeError("the path has no point at gamma = 0 or 1; include both in gammas")
    a, b = float(ends[0.0].iloc[0]), float(ends[1.0].iloc[0])
    inner = d[(d["gamma"] >= -1e-9) & (d["gamma"] <= 1 + 1e-9)]
    worst = inner.loc[inner[metric].idxmin()]
    drop = max(0.0, min(a, b) - float(worst[metric]))
    out = {
        "split": split,
        f"{metric}_at_0": a,
        f"{metric}_at_1": b,
        f"min_{metric}_on_0_1": float(worst[metric]),
        "argmin_gamma": float(worst["gamma"]),
        "max_drop": drop,
        f"mean_{metric}_on_0_1": float(inner[metric].mean()),
    }
    if metric == "accuracy":
        out["within_1pt"] = bool(drop <= 0.01 + 1e-12)
    return out


# ----------------------------------------------------------------------------------------- Bezier curves


def bezier_coefficients(t: float) -> tuple[float, float, float]:
    """Weights of ``(A, theta, B)`` at ``t`` on the quadratic Bezier curve
    ``phi(t) = (1 - t)^2 A + 2 t (1 - t) theta + t^2 B`` (Garipov et al. 2018): ``phi(0) = A``, ``phi(1) = B``."""
    t = float(t)
    return (1 - t) ** 2, 2 * t * (1 - t), t**2


def bezier_midpoint_init(state_a: ModelOrState, state_b: ModelOrState) -> dict[str, torch.Tensor]:
    """The control point's initial value: the midpoint ``(A + B) / 2`` (the curve starts as the straight line)."""
    return interpolate_states(state_a, state_b, 0.5)


@dataclass
class BezierCurve:
    """A trained quadratic Bezier curve between two solutions: the control point ``theta`` (a state dict
    with the models' keys, float tensors only trained) and the training log (step, t, loss)."""

    theta: dict[str, torch.Tensor]
    log: pd.DataFrame


def train_bezier(
    model_template: torch.nn.Module,
    state_a: ModelOrState,
    state_b: ModelOrState,
    train_batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    steps: int = 200,
    lr: float = 1e-4,
    seed: int = 0,
    theta: ModelOrState | None = None,
    device: torch.device | str | None = None,
    optimizer_cls=torch.optim.Adam,
    mixed_precision: str = "no",
    kernels: str = TrainConfig.kernels,
    progress: bool = True,
    desc: str = "bezier",
) -> BezierCurve:
    """Train the control point ``theta`` of the quadratic Bezier curve from ``A`` to ``B`` (mode
    connectivity, Garipov et al. 2018): at every step draw ``t ~ U(0, 1)``, take the next training batch
    (cycled, reshuffled every pass), and lower the loss of the model with weights ``phi_theta(t)`` by one
    ``optimizer_cls`` step on ``theta``. The expected loss over uniform ``t`` is what this minimises.

    ``theta`` starts at ``A`` and ``B``'s midpoint unless given (then the curve is the straight line).
    ``train_batches``: collated batches (dicts of tensors the model takes, with ``labels``), e.g.
    ``EvalBatches(...).batches`` of the training split. The model runs in eval mode (no dropout), so a
    step is deterministic given ``seed``. Non-float buffers are copied from ``A``. Inputs are never
    modified. Returns a :class:`BezierCurve` (theta on the CPU).

    ``mixed_precision``: ``"bf16"`` runs the forward passes under bf16 autocast (CPU and CUDA), theta and Adam
    stay fp32; ``"no"`` (default) fp32; no ``"fp16"`` (it would need gradient scaling).
    ``kernels``: ``"fast"`` (default) runs eager attention on CPU and, for a single-label BERT classifier, the
    last layer for ``[CLS]`` only (:class:`tmlib.tasks.cls_forward.ClsOnlyClassifier`; no dropout here, so the same
    numbers up to float rounding); ``"hf"`` the model's own forward. Their measured effect:
    ``benchmarks/bench_curve.py``."""
    from torch.func import functional_call

    from tmlib.core.precision import autocast, check_kernels, check_mixed_precision, kernels_context
    from tmlib.tasks.cls_forward import ClsOnlyClassifier

    if steps < 1:
        raise LandscapeError(f"steps must be >= 1, got {steps}")
    if not train_batches:
        raise LandscapeError("train_batches is empty; pass collated training batches (dicts with labels)")
    sa, sb = as_state(state_a, "state_a"), as_state(state_b, "state_b")
    check_states([sa, sb], ["state_a", "state_b"])
    check_kernels(kernels)
    scratch = _Scratch(model_template, device, sa)
    if check_mixed_precision(mixed_precision, scratch.device) == "fp16":
        raise LandscapeError(
            "train_bezier runs 'no' (fp32) or 'bf16' autocast; fp16 would need gradient scaling: "
            "use mixed_precision='bf16'"
        )
    model = scratch.model
    net = ClsOnlyClassifier.for_kernels(model, kernels)  # called at every step
    prefix = "" if net is model else "model."  # the wrapper's parameter names: "model.<key>"
    sa, sb = scratch.on_device(sa), scratch.on_device(sb)
    init = bezier_midpoint_init(sa, sb) if theta is None else scratch.on_device(as_state(theta, "theta"))
    check_states([sa, init], ["state_a", "theta"])
    keys = [k for k, v in sa.items() if _is_float(v)]
    params = {k: init[k].detach().clone().requires_grad_(True) for k in keys}
    fixed = {prefix + k: v for k, v in sa.items() if not _is_float(v)}
    opt = optimizer_cls(list(params.values()), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    rows = []
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    with kernels_context(model, kernels, scratch.device):  # the attention ``kernels`` asks for, restored after
        for step in range(1, steps + 1):
            if not order:
                order = torch.randperm(len(train_batches), generator=gen).tolist()
            batch = {k: v.to(scratch.device) for k, v in train_batches[order.pop()].items()}
            t = float(torch.rand((), generator=gen))
            ca, ct, cb = bezier_coefficients(t)
            point = {prefix + k: ca * sa[k] + ct * params[k] + cb * sb[k] for k in keys}
            with autocast(mixed_precision, scratch.device):
                out = functional_call(net, {**point, **fixed}, args=(), kwargs=batch, strict=False)
            loss = out.loss.float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rows.append({"step": step, "t": t, "loss": float(loss.detach())})
            bar.update(1)
    bar.close()
    theta_out = {
        k: (params[k].detach().cpu().clone() if k in params else v.detach().cpu().clone()) for k, v in sa.items()
    }
    return BezierCurve(theta_out, pd.DataFrame(rows, columns=["step", "t", "loss"]))


@torch.no_grad()
def bezier_path(
    model_template: torch.nn.Module,
    state_a: ModelOrState,
    theta: ModelOrState,
    state_b: ModelOrState,
    eval_batches,
    ts: Sequence[float] | None = None,
    *,
    device: torch.device | str | None = None,
    evaluate: Callable[[torch.nn.Module, EvalBatches], dict] = evaluate_classifier,
    progress: bool = True,
    desc: str = "bezier curve",
) -> pd.DataFrame:
    """Loss and accuracy along the quadratic Bezier curve ``phi(t)`` through control point ``theta``, on every
    split of ``eval_batches``, as :func:`linear_path` does along the line. ``ts`` defaults to 0, 0.1, ..., 1;
    ``t = 0`` gives exactly ``A`` and ``t = 1`` exactly ``B``. Returns DataFrame(gamma, split, loss, accuracy)
    (``gamma`` is ``t``, so the tables of lines and curves line up)."""
    ts = _check_gammas(np.round(np.linspace(0, 1, 11), 6) if ts is None else ts)
    splits = _eval_dict(eval_batches)
    sa, st, sb = as_state(state_a, "state_a"), as_state(theta, "theta"), as_state(state_b, "state_b")
    check_states([sa, st, sb], ["state_a", "theta", "state_b"])
    scratch = _Scratch(model_template, device, sa)
    sa, st, sb = scratch.on_device(sa), scratch.on_device(st), scratch.on_device(sb)
    rows = []
    bar = tqdm(total=len(ts) * len(splits), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for t in ts:
        ca, ct, cb = bezier_coefficients(t)

        def fill(k, x, t=t, ca=ca, ct=ct, cb=cb):
            if not _is_float(x) or t == 0.0:
                x.copy_(sa[k])
            elif t == 1.0:
                x.copy_(sb[k])
            else:
                torch.add(sa[k] * ca, st[k], alpha=ct, out=x)
                x.add_(sb[k], alpha=cb)

        model = scratch.load(fill)
        for split, batches in splits.items():
            m = evaluate(model, batches)
            rows.append({"gamma": float(t), "split": split, "loss": float(m["loss"]), "accuracy": float(m["accuracy"])})
            bar.update(1)
    bar.close()
    return pd.DataFrame(rows, columns=["gamma", "split", "loss", "accuracy"])
