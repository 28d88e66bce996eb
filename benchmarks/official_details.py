"""The effect of each official selective-masking detail that became notebook 01's default, measured on a pipeline
(default: the `default` parameter set): label agreement and masked-token overlap between the official default and
its named option, on the same tagger, corpus and rows.

    python benchmarks/official_details.py                       # default set, runs/default/01_selective_masking
    python benchmarks/official_details.py --params cpu_taskpt_budgets --out runs/cpu_taskpt_budgets/01_selective_masking

Stages come from the run folder's cache (built there when missing, as the notebook builds them); the second tagger
(the other dev split) is trained here and not saved. Writes benchmarks/results/official_details.json.

- tagger.dev: "buffer_tail" (official merge_pkl.py) vs "task_dev": each tagger's dev F1 on the task's dev buffer
  labels, and the agreement of their corpus labels (token share and Cohen's kappa).
- tagger.stopwords: "none" (official) vs "buffer": the share of important tokens the stop list zeroes and the share
  of sentences it leaves without one (those get no mask).
- taskpt.rank: "logit" (official) vs "probability": the share of masked positions both rankings choose (Jaccard over
  the corpus) and the share of sentences whose masked set differs.
- taskpt.mask_positions: "sentence" (official) vs "row": masked tokens per 100 tokens, their overlap on the same
  packed rows, the masks on [UNK], and the masks the official order loses to trimming.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from tmlib.core.training import fit

ROOT = Path(__file__).resolve().parent.parent


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two 0/1 label vectors."""
    po = float((a == b).mean())
    pa, pb = a.mean(), b.mean()
    pe = pa * pb + (1 - pa) * (1 - pb)
    return float((po - pe) / (1 - pe)) if pe < 1 else 1.0


def tagger_dev(exp, buffer, corpus_ids) -> dict:
    """Both taggers: F1 on the task's dev buffer labels, and agreement of their labels on the corpus."""
    from tmlib.core.models import load_token_classifier
    from tmlib.experiments.selective.stages import tagger_split
    from tmlib.selective.tagger import ImportanceTagging, TaggerCollator, _predict_ids, tagger_examples, tagger_metrics

    cfg, tok = exp.cfg, exp.tokenizer
    dev_rows = tagger_examples(buffer.scores["dev"], tok, exp.plan.tagger.train.max_length)
    collate = TaggerCollator(tok)
    dev_batches = [collate(dev_rows[i : i + 64]) for i in range(0, len(dev_rows), 64)]
    out, labels = {}, {}
    init = str(exp.get(exp.genept_stage()).model_dir) if cfg.tagger.model == "genept" else None
    for dev in ("buffer_tail", "task_dev"):
        train, own_dev = tagger_split(buffer.scores, dev)
        model = load_token_classifier(init or cfg.tagger.model, num_labels=2, seed=cfg.pretrain_seed)
        fit(
            model,
            train,
            exp.plan.tagger.train,
            ImportanceTagging(tok, own_dev, class_weight=cfg.tagger.class_weight),
            desc="tagger",
        )
        m = tagger_metrics(model.eval(), dev_batches)
        probs, _ = _predict_ids(model, tok, corpus_ids, 128, "label", False)
        labels[dev] = np.concatenate([(p > 0.5).astype(np.int8) for p in probs])
        out[dev] = {"dev_f1_on_task_dev": m["f1"], "important_share": float(labels[dev].mean()), "n_train": len(train)}
    a, b = labels["buffer_tail"], labels["task_dev"]
    out["token_agreement"] = float((a == b).mean())
    out["kappa"] = kappa(a, b)
    return out


def stopwords(corpus, tok) -> dict:
    """Important tokens the buffer's stop list would zero, on the official (unfiltered) corpus labels."""
    from tmlib.selective.stopwords import resolve_stopwords, stopword_mask

    names = resolve_stopwords("spacy")
    kept, zeroed, empty_before, empty_after = 0, 0, 0, 0
    for ids, imp in zip(corpus["token_ids"], corpus["important"]):
        imp = np.asarray(imp, dtype=bool)
        stop = stopword_mask(tok.convert_ids_to_tokens(list(ids)), None, names)
        zeroed += int((imp & stop).sum())
        kept += int((imp & ~stop).sum())
        empty_before += int(not imp.any())
        empty_after += int(not (imp & ~stop).any())
    n = len(corpus)
    return {
        "important_tokens": kept + zeroed,
        "zeroed_share": zeroed / max(1, kept + zeroed),
        "sentences_without_important_official": empty_before / n,
        "sentences_without_important_with_stoplist": empty_after / n,
    }


def rank(corpus) -> dict:
    """Masked positions under the official class-1-logit ranking vs P(important)."""
    from tmlib.selective.collators import selective_positions

    both = either = differ = 0
    for p, lg, imp in zip(corpus["importance"], corpus["importance_logit"], corpus["important"]):
        a = set(selective_positions(lg, imp, len(lg)).tolist())
        b = set(selective_positions(p, imp, len(p)).tolist())
        both += len(a & b)
        either += len(a | b)
        differ += int(a != b)
    return {"jaccard": both / max(1, either), "sentences_differing": differ / len(corpus)}


def mask_positions(exp, corpus) -> dict:
    """The official order (masks per whole sentence, then packing and trimming) vs masks drawn on the rows."""
    from tmlib.selective.collators import SelectiveMaskingCollator, sentence_masks
    from tmlib.selective.mlm import draw_static_masks, pack_documents

    tp, tok = exp.cfg.taskpt, exp.tokenizer
    train_idx, _ = exp.taskpt_split(corpus)
    sub = corpus.select(train_idx)
    scores, important = list(sub["importance_logit"]), list(sub["important"])
    drawn = sentence_masks(scores, important, "selective", seed=exp.cfg.pretrain_seed)
    fields = {"importance": scores, "important": important, "drawn": drawn}
    seed = exp.cfg.pretrain_seed
    rows = pack_documents(
        list(sub["token_ids"]), list(sub["doc"]), tok, tp.max_length,
        short_seq_prob=tp.short_seq_prob, seed=seed, token_fields=fields,
    )  # fmt: skip
    coll = lambda: SelectiveMaskingCollator(tok, seed=exp.cfg.pretrain_seed)
    sent = draw_static_masks(rows, coll(), tp.max_predictions, seed=exp.cfg.pretrain_seed)
    row = draw_static_masks(rows.remove_columns("drawn"), coll(), tp.max_predictions, seed=exp.cfg.pretrain_seed)
    tokens = sum(len(r) for r in rows["input_ids"])
    both = either = unk = 0
    for r, (a, b) in enumerate(zip(sent["labels"], row["labels"])):
        ma = {i for i, x in enumerate(a) if x != -100}
        mb = {i for i, x in enumerate(b) if x != -100}
        both += len(ma & mb)
        either += len(ma | mb)
        unk += sum(1 for i in ma if rows[r]["input_ids"][i] == tok.unk_token_id)
    n_sent = sum(sum(r != -100 for r in lab) for lab in sent["labels"])
    n_row = sum(sum(r != -100 for r in lab) for lab in row["labels"])
    drawn_total = sum(map(sum, drawn))
    kept = sum(map(sum, rows["drawn"]))
    return {
        "masked_per_100_tokens_sentence": 100 * n_sent / tokens,
        "masked_per_100_tokens_row": 100 * n_row / tokens,
        "jaccard": both / max(1, either),
        "masks_on_unk": unk,
        "masks_lost_to_trimming_share": 1 - kept / max(1, drawn_total),
    }


def main() -> None:
    from tmlib.core.config import from_flat, load_yaml
    from tmlib.experiments.selective import Experiment, SelectiveConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="default")
    ap.add_argument("--out", default="runs/default/01_selective_masking")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "official_details.json"))
    args = ap.parse_args()
    flat = load_yaml(ROOT / "papermill_params" / "01_selective_masking" / f"{args.params}.yaml")
    cfg = from_flat(SelectiveConfig, {**flat, "out_dir": args.out, "progress": False})
    if cfg.taskpt.packing != "documents":
        cfg = replace(cfg, taskpt=replace(cfg.taskpt, packing="documents"))
    start = time.perf_counter()
    exp = Experiment(cfg)
    corpus = exp.get(exp.corpus_stage())
    buffer = exp.get(exp.buffer_stage())
    result = {
        "params": args.params,
        "corpus_sentences": len(corpus),
        "tagger_dev": tagger_dev(exp, buffer, list(corpus["token_ids"])),
        "stopwords": stopwords(corpus, exp.tokenizer),
        "rank": rank(corpus),
        "mask_positions": mask_positions(exp, corpus),
        "seconds": round(time.perf_counter() - start, 1),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
