"""Determinism: the same seed gives the same importance labels, the same masks and the same metrics.

Two independent builds (fresh run folders, nothing reused) of the smoke-size pipelines are compared.
"""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tmlib.core.config import from_flat
from tmlib.suite import PARAMS


def _smoke(notebook: str, cls, out_dir):
    values = yaml.safe_load((PARAMS / notebook / "smoke.yaml").read_text())
    return from_flat(cls, {**values, "out_dir": str(out_dir), "seeds": values["seeds"][:1], "progress": False})


@pytest.mark.slow
def test_selective_pipeline_is_deterministic(tmp_path):
    from tmlib.experiments import selective

    exps = [selective.Experiment(_smoke("01_selective_masking", selective.SelectiveConfig, tmp_path / n)) for n in "ab"]
    runs = [{"experiment": e, "results": e.run()} for e in exps]
    for e, r in zip(exps, runs):
        e.write(r["results"])
    a, b = (tmp_path / n for n in ("a", "b"))
    # buffer-method labels and the tagger's corpus labels
    assert (a / "buffer" / "labels.json").read_bytes() == (b / "buffer" / "labels.json").read_bytes()
    corpus = [e.get(e.corpus_stage()) for e in exps]
    assert corpus[0]["important"] == corpus[1]["important"] and corpus[0]["importance"] == corpus[1]["importance"]
    assert len({x for row in corpus[0]["importance"] for x in row}) > 10  # real scores, not a constant
    # fine-tuning metrics
    cols = ["genept_steps", "method", "taskpt_steps", "seed", "dev_accuracy", "test_accuracy"]
    pd.testing.assert_frame_equal(runs[0]["results"][cols], runs[1]["results"][cols])


@pytest.mark.slow
def test_learned_masks_are_deterministic(tmp_path):
    from tmlib.experiments import masking

    results = []
    for name in ("a", "b"):
        cfg = _smoke("03_masking_vs_finetuning", masking.MaskingConfig, tmp_path / name)
        cfg.tasks, cfg.max_lengths, cfg.max_train, cfg.methods = (
            cfg.tasks[:1],
            cfg.max_lengths[:1],
            cfg.max_train[:1],
            ["mask"],
        )
        results.append(masking.Experiment(cfg).run().results)
    pd.testing.assert_frame_equal(
        results[0].drop(columns=["train_seconds"]), results[1].drop(columns=["train_seconds"])
    )
    from tmlib.masking.solutions import solution_path

    files = [solution_path(tmp_path / n, "mr", "mask", 0) / "mask.safetensors" for n in ("a", "b")]
    # same bits and metadata (the file bytes may differ: safetensors writes its metadata map unordered)
    from safetensors import safe_open

    opened = [safe_open(str(f), "np") for f in files]
    assert opened[0].metadata() == opened[1].metadata() and sorted(opened[0].keys()) == sorted(opened[1].keys())
    for k in opened[0].keys():  # noqa: SIM118 - a safetensors handle, not a dict
        assert (opened[0].get_tensor(k) == opened[1].get_tensor(k)).all(), k
    metrics = [json.loads((f.parent / "metrics.json").read_text()) for f in files]
    assert metrics[0]["dev_accuracy"] == metrics[1]["dev_accuracy"]
    tests = [tmp_path / n / "evaluations" / "mr" / "mask-s0" for n in ("a", "b")]  # the test evaluation stage
    assert json.loads((tests[0] / "metrics.json").read_text()) == json.loads((tests[1] / "metrics.json").read_text())
    assert (np.load(tests[0] / "predictions.npy") == np.load(tests[1] / "predictions.npy")).all()
