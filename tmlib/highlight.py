"""Token highlighting as standalone HTML: one self-contained page (inline CSS, no JavaScript) for a
batch of :class:`~tmlib.selective.types.TokenScores`.

Written in the spirit of Captum's ``visualize_text``, with what users of such tools ask for: export
outside Jupyter, batches of hundreds of texts, long texts that wrap and stay readable.

* background colour = importance on a diverging scale (red supports the explained class, blue speaks
  against it, white = 0), scaled per text (``scale="text"``), over the batch (``"batch"``) or by a
  fixed number; hover a token for its exact score;
* WordPiece continuations (``##ing``) are drawn joined to their word, with a faint seam, and a word
  never breaks across lines;
* hard 0/1 labels (``TokenScores.important``) are underlined; optional ``boxes`` (e.g. the tokens a
  masking strategy would mask) are outlined;
* each text gets a header with its gold and predicted label (a mark when they differ), the method and
  an optional caption; a legend explains the encoding;
* everything that comes from data is HTML-escaped.

    html = render_html(scores, label_names=["negative", "positive"], title="MR dev, occlusion")
    write_html_report("runs/x/report.html", scores, label_names=[...])
"""

from __future__ import annotations

import html as _html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tmlib.selective.types import TokenScores

__all__ = ["render_html", "write_html_report", "token_colors", "CSS"]

POS_RGB = np.array([178, 24, 43], dtype=np.float64)  # supports the explained class (RdBu red end)
NEG_RGB = np.array([33, 102, 172], dtype=np.float64)  # speaks against it (RdBu blue end)
WHITE = np.array([255, 255, 255], dtype=np.float64)

CSS = """
.tmhl{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1d1d1f;
  max-width:1000px;margin:0 auto;padding:8px 16px;line-height:1.45}
.tmhl h1{font-size:1.35em;margin:.4em 0 .2em}
.tmhl .sub{color:#555;font-size:.9em;margin-bottom:.8em}
.tmhl .legend{display:flex;flex-wrap:wrap;align-items:center;gap:6px 18px;font-size:.85em;color:#333;
  padding:8px 10px;border:1px solid #e3e3e3;border-radius:6px;background:#fafafa;margin-bottom:12px}
.tmhl .bar{display:inline-block;width:170px;height:12px;border-radius:3px;vertical-align:middle;margin:0 6px;
  border:1px solid #ccc;background:linear-gradient(90deg,rgb(33,102,172),#fff 50%,rgb(178,24,43))}
.tmhl .ex{border-top:1px solid #d9d9d9;padding:9px 2px 11px}
.tmhl .ex.same{border-top:1px dashed #efefef;padding-top:3px}
.tmhl .ex.same .idx{visibility:hidden}
.tmhl .hd{font-size:.8em;color:#555;margin-bottom:4px;display:flex;flex-wrap:wrap;gap:4px 12px}
.tmhl .hd b{color:#1d1d1f}
.tmhl .idx{color:#999;font-variant-numeric:tabular-nums}
.tmhl .wrong{color:#b2182b;font-weight:600}
.tmhl .right{color:#1a7f37}
.tmhl .meth{background:#eef1f5;border-radius:3px;padding:0 5px}
.tmhl .cap{font-style:italic}
.tmhl .txt{font-size:1.02em;line-height:2.05;overflow-wrap:anywhere}
.tmhl .w{white-space:nowrap}
.tmhl .w.long{white-space:normal}
.tmhl .t{padding:2px 1px;border-radius:2px}
.tmhl .t.c{box-shadow:inset 1px 0 0 rgba(0,0,0,.18)}
.tmhl .t.hard{text-decoration:underline;text-decoration-thickness:3px;text-underline-offset:4px;
  text-decoration-color:#111}
.tmhl .t.box{outline:2px solid #111;outline-offset:-1px}
.tmhl .empty{color:#999;font-style:italic}
.tmhl .trunc{color:#999;font-size:.85em}
.tmhl .k-hard{text-decoration:underline;text-decoration-thickness:3px;text-underline-offset:4px}
.tmhl .k-box{outline:2px solid #111;outline-offset:-1px;padding:0 3px}
"""


def _esc(x) -> str:
    return _html.escape(str(x), quote=True)


def token_colors(values: np.ndarray, scale: float) -> tuple[list[str], np.ndarray]:
    """Background colours (``rgb(r,g,b)``) for ``values`` divided by ``scale`` and clipped to [-1, 1];
    also returns the clipped intensities."""
    v = np.asarray(values, dtype=np.float64)
    a = np.clip(v / scale, -1.0, 1.0) if scale > 0 else np.zeros_like(v)
    mag = np.abs(a)[:, None]
    anchor = np.where(a[:, None] >= 0, POS_RGB, NEG_RGB)
    rgb = np.rint(WHITE * (1 - mag) + anchor * mag).astype(int)
    return [f"rgb({r},{g},{b})" for r, g, b in rgb], a


def _display_values(ts: TokenScores) -> np.ndarray:
    """What the colours show: the scores, shifted by ``meta["display_offset"]`` where a method's
    decision threshold is not 0 (the buffer method: important iff margin > -delta, shown as margin + delta,
    so red = important). Tooltips keep the raw score."""
    return ts.scores + float(ts.meta.get("display_offset", 0.0) or 0.0)


def _scale_for(scores: Sequence[TokenScores], scale) -> list[float]:
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        if scale <= 0:
            raise ValueError(f"a numeric scale must be > 0 (got {scale}); or use 'text' or 'batch'")
        return [float(scale)] * len(scores)
    per_text = [float(np.abs(_display_values(s)).max()) if len(s.scores) else 0.0 for s in scores]
    if scale == "text":
        return per_text
    if scale == "batch":
        return [max(per_text, default=0.0)] * len(scores)
    raise ValueError(
        f"unknown scale {scale!r}; valid: 'text' (per-text max |score|), 'batch' (max over all texts) "
        f"or a positive number"
    )


def _label(value: int | None, label_names: Sequence[str] | None) -> str:
    if value is None:
        return "?"
    if label_names is not None and 0 <= value < len(label_names):
        return str(label_names[value])
    return str(value)


def _tokens_html(ts: TokenScores, scale: float, show_important: bool, box: np.ndarray | None) -> str:
    n = len(ts.tokens)
    if n == 0:
        return '<span class="empty">(no tokens)</span>'
    colors, a = token_colors(_display_values(ts), scale)
    hard = ts.important if (show_important and ts.important is not None) else None
    boxed = np.zeros(n, dtype=bool)
    if box is not None:
        box = np.asarray(box)
        if box.dtype == bool:
            if box.shape != (n,):
                raise ValueError(f"a boolean box mask needs one entry per token ({n}), got shape {box.shape}")
            boxed = box
        else:  # token positions
            box = box.astype(np.int64).ravel()
            if box.size and (box.min() < 0 or box.max() >= n):
                raise ValueError(
                    f"box position {box.max() if box.max() >= n else box.min()} is out of range for "
                    f"a text with {n} tokens"
                )
            boxed[box] = True
    words: list[list[str]] = []
    word_len: list[int] = []
    for i, tok in enumerate(ts.tokens):
        cont = tok.startswith("##") and len(tok) > 2 and i > 0
        piece = tok[2:] if cont else tok
        cls = (
            "t"
            + (" c" if cont else "")
            + (" hard" if hard is not None and hard[i] else "")
            + (" box" if boxed[i] else "")
        )
        style = f"background:{colors[i]}" + (";color:#fff" if abs(a[i]) > 0.62 else "")
        span = (
            f'<span class="{cls}" style="{style}" title="{_esc(tok)}: {float(ts.scores[i]):+.4g}">{_esc(piece)}</span>'
        )
        if cont and words:
            words[-1].append(span)
            word_len[-1] += len(piece)
        else:
            words.append([span])
            word_len.append(len(piece))
    return " ".join(f'<span class="w{" long" if k > 30 else ""}">{"".join(w)}</span>' for w, k in zip(words, word_len))


def _header(i: int, ts: TokenScores, label_names, caption: str | None) -> str:
    parts = [f'<span class="idx">#{i}</span>']
    if ts.label is not None:
        parts.append(f"<span>gold: <b>{_esc(_label(ts.label, label_names))}</b></span>")
    if ts.pred is not None:
        mark = ""
        cls = ""
        if ts.label is not None:
            cls, mark = ("right", " &#10003;") if ts.pred == ts.label else ("wrong", " &#10007;")
        p = ts.meta.get("p_target") if ts.meta.get("target") == ts.pred else None
        prob = f" ({p:.2f})" if isinstance(p, float) else ""
        attr = f' class="{cls}"' if cls else ""
        parts.append(f"<span{attr}>pred: <b>{_esc(_label(ts.pred, label_names))}</b>{prob}{mark}</span>")
    if ts.method:
        parts.append(f'<span class="meth">{_esc(ts.method)}</span>')
    if caption:
        parts.append(f'<span class="cap">{_esc(caption)}</span>')
    if ts.meta.get("truncated"):
        parts.append('<span class="trunc">(truncated)</span>')
    return '<div class="hd">' + "".join(parts) + "</div>"


def _legend(any_hard: bool, any_box: bool, scale, any_offset: bool = False) -> str:
    scale_note = {"text": "scaled per text", "batch": "scaled over the whole batch"}.get(scale, f"scale ±{scale}")
    items = [
        f'<span>against<span class="bar"></span>for the explained class ({_esc(scale_note)}; hover a token '
        f"for its score)</span>"
    ]
    if any_hard:
        items.append('<span><span class="k-hard">underlined</span> = important (hard label)</span>')
    if any_box:
        items.append('<span><span class="k-box">boxed</span> = selected for masking</span>')
    if any_offset:
        items.append("<span>buffer rows: colour = margin + delta, so red = important</span>")
    items.append("<span>joined pieces = one word split into WordPieces</span>")
    return '<div class="legend">' + "".join(items) + "</div>"


def render_html(
    scores: Sequence[TokenScores],
    *,
    label_names: Sequence[str] | None = None,
    title: str | None = None,
    subtitle: str | None = None,
    scale="text",
    show_important: bool = True,
    boxes: Sequence[np.ndarray | None] | None = None,
    captions: Sequence[str | None] | None = None,
    start_index: int = 0,
    indices: Sequence[int] | None = None,
    legend: bool = True,
    full_document: bool = True,
) -> str:
    """HTML for a batch of scored texts: a full page (``full_document=True``) or a fragment for an
    ipywidgets ``HTML`` widget / a notebook cell (the CSS travels with it either way).

    ``boxes[i]``: token positions (ints) or a boolean mask (one per token) of text i to outline; ``captions[i]``: a
    note in text i's header (e.g. "tagger" / "buffer labels"). ``scale``: "text", "batch" or a number.
    Headers number texts ``start_index, start_index + 1, ...`` or by ``indices`` (e.g. dataset rows,
    when several methods' rows of one example follow each other).
    """
    scores = list(scores)
    bad = [i for i, s in enumerate(scores) if not isinstance(s, TokenScores)]
    if bad:
        raise TypeError(
            f"scores[{bad[0]}] is {type(scores[bad[0]]).__name__}; pass TokenScores objects "
            f"(from tmlib.importance.attribution.score_tokens)"
        )
    for name, seq in (("boxes", boxes), ("captions", captions), ("indices", indices)):
        if seq is not None and len(seq) != len(scores):
            raise ValueError(f"{len(scores)} texts but {len(seq)} {name}; pass one per text (None where there is none)")
    scales = _scale_for(scores, scale)
    body = []
    if title:
        body.append(f"<h1>{_esc(title)}</h1>")
    if subtitle:
        body.append(f'<div class="sub">{_esc(subtitle)}</div>')
    if legend:
        any_hard = show_important and any(s.important is not None for s in scores)
        any_box = boxes is not None and any(b is not None for b in boxes)
        any_offset = any(s.meta.get("display_offset") for s in scores)
        body.append(_legend(any_hard, any_box, scale, any_offset))
    for i, ts in enumerate(scores):
        box = boxes[i] if boxes is not None else None
        cap = captions[i] if captions is not None else None
        number = indices[i] if indices is not None else start_index + i
        same = indices is not None and i > 0 and indices[i - 1] == number  # another row of the same example
        body.append(
            f'<div class="ex{" same" if same else ""}">{_header(number, ts, label_names, cap)}'
            f'<div class="txt">{_tokens_html(ts, scales[i], show_important, box)}</div></div>'
        )
    inner = f'<div class="tmhl">{"".join(body)}</div>'
    if not full_document:
        return f"<style>{CSS}</style>{inner}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title or 'token importance')}</title><style>body{{margin:0;background:#fff}}{CSS}</style>"
        f"</head><body>{inner}</body></html>\n"
    )


def write_html_report(path: str | Path, scores: Sequence[TokenScores], **kw) -> Path:
    """Render :func:`render_html` to ``path`` atomically (a crash never leaves half a page)."""
    from tmlib.core.runs import atomic_write_text

    return atomic_write_text(path, render_html(scores, **kw))
