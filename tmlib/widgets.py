"""Interactive token-importance explorer for Jupyter (ipywidgets).

    from tmlib.widgets import TokenImportanceExplorer
    explorer = TokenImportanceExplorer(model, tokenizer, dataset=data["dev"], tagger=tagger)
    explorer            # displays the widget in JupyterLab / Notebook

Pick a dataset example (dropdown) or type a text; choose a method (any of
:data:`tmlib.importance.attribution.METHODS`) and the buffer method's ``delta``; press *Compute*. The
output shows the tokens highlighted by importance with the predicted (and gold) label; if a
``tagger`` is given, the tagger's prediction beside the gold buffer labels; and, with *masking
preview*, which tokens selective masking would mask vs the random-count control.

In the page, the explorer is the element with CSS class ``tmlib-explorer``; its parts carry
``tmlib-example``, ``tmlib-text``, ``tmlib-method``, ``tmlib-delta``, ``tmlib-preview``,
``tmlib-mask-ratio``, ``tmlib-compute``, ``tmlib-status`` and ``tmlib-output`` (the browser tests
select by them).

Everything the buttons do is a plain method (:meth:`set_example`, :meth:`set_text`,
:meth:`on_compute`, ...), so the explorer is driven and tested without a browser: set widget values,
call the method, read :attr:`html` (the rendered fragment) or :attr:`last` (the TokenScores shown).
Scores are cached per (text, method, delta, label), so flipping between methods is instant after the
first computation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tmlib.highlight import render_html
from tmlib.selective.types import TokenScores

__all__ = ["TokenImportanceExplorer"]

MAX_CHOICES = 1000  # dropdown entries; larger datasets show their first MAX_CHOICES examples


class TokenImportanceExplorer:
    """See the module docstring. ``dataset``: a ``datasets.Dataset`` with ``text`` (and ``label``)
    columns, or a list of strings (then ``labels`` may give their gold classes)."""

    def __init__(
        self,
        model,
        tokenizer,
        dataset=None,
        *,
        labels: Sequence[int] | None = None,
        label_names: Sequence[str] | None = None,
        methods: Sequence[str] | None = None,
        method: str = "occlusion",
        delta: float = 0.01,
        tagger=None,
        mask_ratio: float = 0.15,
        fallback: str | None = None,
        max_length: int = 128,
        method_kwargs: dict[str, dict] | None = None,
        seed: int = 0,
        auto: bool = True,
    ):
        import ipywidgets as W

        from tmlib.importance.attribution import METHODS

        self.model, self.tokenizer, self.tagger = model, tokenizer, tagger
        self.max_length, self.seed, self.fallback, self.auto = max_length, seed, fallback, auto
        self.method_kwargs = {k: dict(v) for k, v in (method_kwargs or {}).items()}
        methods = list(methods or METHODS)
        unknown = [m for m in methods + [method] if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown importance method {unknown[0]!r}; valid: {', '.join(METHODS)}")
        if method not in methods:
            raise ValueError(f"method {method!r} is not among the offered methods {methods}")
        self.texts, self.labels = self._examples(dataset, labels)
        id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
        self.label_names = (
            list(label_names)
            if label_names is not None
            else ([id2label[i] for i in sorted(id2label)] if id2label else None)
        )
        self._cache: dict[tuple, TokenScores] = {}
        self.n_computed = 0  # how many times a method actually ran (cache misses)
        self.gold: int | None = None  # gold label of the current text (None for typed text)
        self.last: dict[str, Any] = {}
        self._setting = False  # True while the explorer itself changes widget values

        options = [
            (f"#{i} {self._label(self.labels[i]) + ': ' if self.labels else ''}{t[:70]}", i)
            for i, t in enumerate(self.texts[:MAX_CHOICES])
        ]
        self.example = W.Dropdown(
            options=options, value=None, description="example", layout=W.Layout(width="100%"), disabled=not options
        )
        self.text = W.Textarea(
            placeholder="type or paste a text, then press Compute",
            description="text",
            layout=W.Layout(width="100%", height="70px"),
        )
        self.method = W.Dropdown(options=methods, value=method, description="method")
        self.delta = W.BoundedFloatText(
            value=delta,
            min=0.0,
            max=1.0,
            step=0.005,
            description="delta",
            tooltip="buffer method: important iff P(full) - P(buffer + token) < delta",
        )
        self.preview = W.Checkbox(value=False, description="masking preview (selective vs random)")
        self.mask_ratio = W.BoundedFloatText(value=mask_ratio, min=0.01, max=1.0, step=0.05, description="mask ratio")
        self.compute = W.Button(
            description="Compute", button_style="primary", icon="play", tooltip=self._compute_tooltip("")
        )
        self.status = W.HTML()
        self.output = W.HTML()
        self.compute.on_click(lambda _: self.on_compute())
        self.example.observe(
            lambda ch: None if self._setting or ch["new"] is None else self.set_example(ch["new"]), names="value"
        )
        # the button's tooltip follows the text the kernel holds: a page can tell that a typed text has arrived
        self.text.observe(lambda ch: setattr(self.compute, "tooltip", self._compute_tooltip(ch["new"])), names="value")
        self.method.observe(lambda _: self._changed(), names="value")
        self.delta.observe(lambda _: self._changed(), names="value")
        self.preview.observe(lambda _: self._changed(), names="value")
        self.widget = W.VBox(
            [
                self.example,
                self.text,
                W.HBox([self.method, self.delta, self.compute]),
                W.HBox([self.preview, self.mask_ratio]),
                self.status,
                self.output,
            ]
        )
        # stable CSS classes (``tmlib-explorer``, ``tmlib-<part>``) for styling and for the browser tests
        self.widget.add_class("tmlib-explorer")
        for part in ("example", "text", "method", "delta", "preview", "mask_ratio", "compute", "status", "output"):
            getattr(self, part).add_class("tmlib-" + part.replace("_", "-"))

    # ------------------------------------------------------------------------------------------ inputs

    @staticmethod
    def _examples(dataset, labels) -> tuple[list[str], list[int] | None]:
        if dataset is None:
            return [], None
        if hasattr(dataset, "column_names"):
            if "text" not in dataset.column_names:
                raise ValueError(f"the dataset needs a 'text' column; it has {dataset.column_names}")
            texts = list(dataset["text"])
            if labels is None and "label" in dataset.column_names:
                labels = list(dataset["label"])
        elif isinstance(dataset, str):
            raise TypeError("dataset must be a list of texts or a datasets.Dataset, not one string; use set_text()")
        else:
            texts = [str(t) for t in dataset]
        if labels is not None:
            labels = [int(x) for x in labels]
            if len(labels) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        return texts, labels

    def _label(self, y: int | None) -> str:
        names = getattr(self, "label_names", None)
        if y is None:
            return "?"
        return str(names[y]) if names and 0 <= y < len(names) else str(y)

    def set_example(self, index: int) -> str:
        """Show dataset example ``index`` (its gold label is known) and compute it if ``auto``."""
        if not self.texts:
            raise ValueError("this explorer has no dataset; pass dataset=... or use set_text()")
        if not 0 <= index < len(self.texts):
            raise IndexError(f"example {index} out of range: the dataset has {len(self.texts)} examples")
        self._setting = True
        try:
            self.text.value = self.texts[index]
            if index < MAX_CHOICES and self.example.value != index:
                self.example.value = index
        finally:
            self._setting = False
        self.gold = self.labels[index] if self.labels else None
        return self.on_compute() if self.auto else ""

    def set_text(self, text: str, label: int | None = None) -> str:
        """Show a typed text (no gold label unless ``label`` is given) and compute it if ``auto``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        self._setting = True
        try:
            self.example.value = None
            self.text.value = text
        finally:
            self._setting = False
        self.gold = label
        return self.on_compute() if self.auto else ""

    @staticmethod
    def _compute_tooltip(text: str) -> str:
        if not text.strip():
            return "type a text or pick an example first"
        return f"compute the importance of the {len(text)}-character text"

    def _changed(self) -> None:
        if self.auto and self.text.value.strip() and not self._setting:
            self.on_compute()

    # ------------------------------------------------------------------------------------------ scoring

    def scores(self, text: str, method: str, delta: float | None = None, label: int | None = None) -> TokenScores:
        """Importance of ``text``'s tokens by ``method`` (cached). ``delta`` matters for the buffer method only;
        ``label`` is the gold class (the buffer method uses it; without it, the prediction)."""
        from tmlib.importance.attribution import score_tokens

        delta = float(self.delta.value if delta is None else delta) if method == "buffer" else None
        key = (text, method, delta, label)
        if key not in self._cache:
            kw = dict(self.method_kwargs.get(method, {}))
            if method == "buffer":
                kw.update(delta=delta, progress=False, max_length=self.max_length)
            else:
                kw.setdefault("max_length", self.max_length)
            labels = None if label is None else [label]
            self._cache[key] = score_tokens(method, self.model, self.tokenizer, [text], labels, **kw)[0]
            self.n_computed += 1
        return self._cache[key]

    def tagger_scores(self, text: str) -> TokenScores | None:
        if self.tagger is None:
            return None
        key = (text, "tagger", None, None)
        if key not in self._cache:
            from tmlib.selective.tagger import predict_importance

            ts = predict_importance(self.tagger, self.tokenizer, [text])[0]
            ts.method = ts.method or "tagger"
            self._cache[key] = ts
            self.n_computed += 1
        return self._cache[key]

    def masking_preview(self, source: TokenScores) -> tuple[np.ndarray, np.ndarray]:
        """Positions selective masking would mask in ``source`` (by its scores and hard labels), and
        the random-count control's positions (same number, seeded)."""
        from tmlib.selective.collators import random_positions, selective_positions

        rng = np.random.default_rng(self.seed)
        important = source.important if source.important is not None else (source.scores > 0).astype(np.int8)
        sel = selective_positions(
            source.scores,
            important,
            len(source.tokens),
            mask_ratio=float(self.mask_ratio.value),
            fallback=self.fallback,
            rng=rng,
        )
        rnd = random_positions(len(source.tokens), len(sel), rng)
        return np.asarray(sel, dtype=np.int64), np.asarray(rnd, dtype=np.int64)

    # ------------------------------------------------------------------------------------------ compute

    def on_compute(self) -> str:
        """Score the current text with the chosen method and redraw; returns the HTML shown."""
        text = self.text.value.strip()
        if not text:
            self.status.value = "<i>pick an example or type a text, then press Compute</i>"
            self.output.value = ""
            return ""
        if self.example.value is not None and text != self.texts[self.example.value].strip():
            self.gold = None  # the example was edited: its gold label no longer applies
            self._setting = True
            self.example.value = None
            self._setting = False
        method = self.method.value
        notes: list[str] = []
        rows, captions, boxes = [], [], []
        try:
            main = self.scores(text, method, label=self.gold)
        except Exception as exc:  # shown in the widget: a notebook user sees what went wrong and keeps going
            self.status.value = f"<b style='color:#b2182b'>{method} failed:</b> {_esc(type(exc).__name__)}: {_esc(exc)}"
            self.output.value = ""
            self.last = {"error": exc}
            return ""
        if self.gold is not None and main.label is None:
            main = _with_label(main, self.gold)
        rows.append(main), captions.append(None), boxes.append(None)
        self.last = {"main": main}
        gold_buffer = None
        if self.tagger is not None:
            tag = self.tagger_scores(text)
            if self.gold is not None:
                tag = _with_label(tag, self.gold)
            gold_buffer = main if method == "buffer" else self._safe_buffer(text, notes)
            (
                rows.append(tag),
                captions.append("tagger prediction (underlined = predicted important)"),
                boxes.append(None),
            )
            if gold_buffer is not None:
                src = "gold" if self.gold is not None else "predicted"
                rows.append(gold_buffer), boxes.append(None)
                captions.append(f"buffer labels, delta={self.delta.value:g}, {src} label (underlined = important)")
            self.last.update(tagger=tag, buffer=gold_buffer)
        if self.preview.value:
            source = self.last.get("tagger") or (main if method == "buffer" else None) or self._safe_buffer(text, notes)
            source = source or main
            try:
                sel, rnd = self.masking_preview(source)
            except ImportError as exc:
                notes.append(
                    f"masking preview unavailable: tmlib.selective.collators could not be imported ({_esc(exc)})"
                )
            else:
                what = source.method or "scores"
                rows += [source, source]
                captions += [
                    f"selective masking: {len(sel)} token(s) boxed, from {what}",
                    f"random-count control: the same {len(rnd)} token(s) at random positions",
                ]
                boxes += [sel, rnd]
                self.last.update(selective=sel, random=rnd, preview_source=source)
        html = render_html(rows, label_names=self.label_names, captions=captions, boxes=boxes, full_document=False)
        self.output.value = html
        pred = self._label(main.pred)
        gold = f" &middot; gold <b>{_esc(self._label(self.gold))}</b>" if self.gold is not None else ""
        self.status.value = (
            f"predicted <b>{_esc(pred)}</b>{gold} &middot; {len(main.tokens)} tokens &middot; "
            f"{_esc(method)}" + "".join(f"<br><i>{n}</i>" for n in notes)
        )
        self.last["html"] = html
        return html

    def _safe_buffer(self, text: str, notes: list[str]) -> TokenScores | None:
        try:
            return self.scores(text, "buffer", label=self.gold)
        except ImportError as exc:
            notes.append(f"buffer labels unavailable: {_esc(exc)}")
            return None

    @property
    def html(self) -> str:
        return self.output.value

    def _repr_mimebundle_(self, **kwargs):  # display the explorer like a widget
        return self.widget._repr_mimebundle_(**kwargs)


def _with_label(ts: TokenScores, label: int) -> TokenScores:
    import dataclasses

    return dataclasses.replace(ts, label=int(label), meta=dict(ts.meta))


def _esc(x) -> str:
    import html

    return html.escape(str(x), quote=True)
