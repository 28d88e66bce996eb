"""Exports travel: each kind loads in a fresh process with tmlib blocked from import and gives the predictions of the
solution's own dense model (and, for a mask, of `tmlib predict`); the card's numbers are the run's."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tmlib.cli import main
from tmlib.export import ExportError, export_solution, solution_facts, wilson_interval

TEXTS = [
    "a moving , funny and wise film",
    "dull , lifeless and far too long",
    "it is a film",
    "the worst of the year",
    "an unexpected delight from start to finish",
]

BLOCK_TMLIB = """
import sys
class _NoTmlib:
    def find_spec(self, name, path=None, target=None):
        if name == "tmlib" or name.startswith("tmlib."):
            raise ImportError("tmlib is not available in this process")
sys.meta_path.insert(0, _NoTmlib())
"""

LOAD = {
    "finetune": """from transformers import AutoModelForSequenceClassification, AutoTokenizer
model = AutoModelForSequenceClassification.from_pretrained(OUT).eval(); tokenizer = AutoTokenizer.from_pretrained(OUT)
""",
    "mask": "sys.path.insert(0, OUT); import apply_mask; model, tokenizer = apply_mask.load(OUT)\n",
    "bitfit": "sys.path.insert(0, OUT); import apply_bitfit; model, tokenizer = apply_bitfit.load(OUT)\n",
    "lora": """import json
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer
import os
info = json.load(open(OUT + "/tmlib_export.json"))
path = info["backbone_source"]["path"]
base = AutoModelForSequenceClassification.from_pretrained(os.path.join(OUT, path) if os.path.isdir(os.path.join(
    OUT, path)) else path, num_labels=2)
model = PeftModel.from_pretrained(base, OUT).eval(); tokenizer = AutoTokenizer.from_pretrained(OUT + "/tokenizer")
""",
}


def logits_elsewhere(method: str, out: Path) -> torch.Tensor:
    """The export's logits on TEXTS, computed in a fresh process that cannot import tmlib."""
    code = (
        BLOCK_TMLIB
        + f"OUT = {str(out)!r}\nimport torch, json\n"
        + LOAD[method]
        + f"batch = tokenizer({TEXTS!r}, padding=True, truncation=True, max_length=32, return_tensors='pt')\n"
        + "with torch.no_grad():\n    print(json.dumps(model(**batch).logits.tolist()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=out.parent, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.tensor(json.loads(done.stdout.strip().splitlines()[-1]))


def dense_logits(solution: Path) -> torch.Tensor:
    """What tmlib trained and tested: the solution's dense model/ folder (mask applied, LoRA merged)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(solution / "model").eval()
    tok = AutoTokenizer.from_pretrained(solution / "model")
    with torch.no_grad():
        return model(**tok(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")).logits


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt")
    for method in ("finetune", "mask", "bitfit", "lora"):
        lr = {"finetune": "1e-4", "mask": "1e-2", "bitfit": "1e-2", "lora": "3e-3"}[method]
        assert (
            main(
                [
                    "adapt",
                    "--task",
                    "mr",
                    "--model",
                    "minilm",
                    "--method",
                    method,
                    "--seeds",
                    "0",
                    "--max-train",
                    "24",
                    "--max-dev",
                    "16",
                    "--max-test",
                    "60",
                    "--epochs",
                    "1",
                    "--batch-size",
                    "8",
                    "--max-length",
                    "32",
                    "--lr",
                    lr,
                    "--mixed-precision",
                    "fp32",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method", ["finetune", "mask", "bitfit", "lora"])
def test_each_export_loads_without_tmlib_and_predicts_as_the_run(run, tmp_path, method):
    solution = next((run / "solutions").glob(f"*/{method}-s0"))
    out = export_solution(solution, tmp_path / f"export-{method}")
    theirs, ours = logits_elsewhere(method, out), dense_logits(solution)
    assert torch.equal(theirs.argmax(-1), ours.argmax(-1))
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)  # the same weights; kernels may round apart
    card = (out / "README.md").read_text()
    facts = json.loads((out / "tmlib_export.json").read_text())
    ev = json.loads((run / "evaluations" / solution.parent.name / solution.name / "metrics.json").read_text())
    assert facts["test_accuracy"] == ev["test_accuracy"] and facts["test_n"] == ev["test_n"] == 60
    lo, hi = wilson_interval(ev["test_accuracy"], ev["test_n"])
    assert f"{100 * ev['test_accuracy']:.2f}%" in card and f"{100 * lo:.2f}-{100 * hi:.2f}%" in card
    assert f"--method {method} --seeds 0 --max-train 24 --max-dev 16" in card


@pytest.mark.slow
def test_a_mask_export_gives_tmlib_predicts_labels(run, tmp_path):
    import pandas as pd

    solution = next((run / "solutions").glob("*/mask-s0"))
    out = export_solution(solution, tmp_path / "export")
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(texts, index=False)
    assert (
        main(
            [
                "predict",
                "--mask",
                f"mr={solution / 'mask.safetensors'}",
                "--input",
                str(texts),
                "--out",
                str(tmp_path / "pred.csv"),
                "--max-length",
                "32",
            ]
        )
        == 0
    )
    predicted = list(pd.read_csv(tmp_path / "pred.csv")["mr"])
    id2label = json.loads((out / "tmlib_export.json").read_text())["mask_file"]["id2label"]
    theirs = [id2label[str(i)] for i in logits_elsewhere("mask", out).argmax(-1).tolist()]
    assert theirs == predicted


@pytest.mark.slow
def test_a_mask_refuses_another_backbone(run, tmp_path):
    solution = next((run / "solutions").glob("*/mask-s0"))
    out = export_solution(solution, tmp_path / "export")
    facts = json.loads((out / "tmlib_export.json").read_text())
    facts["backbone_source"]["path"] = str(next((run / "solutions").glob("*/finetune-s0")) / "model")
    (out / "tmlib_export.json").write_text(json.dumps(facts))
    code = BLOCK_TMLIB + f"sys.path.insert(0, {str(out)!r}); import apply_mask; apply_mask.load({str(out)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "is not the backbone this mask was learned on" in done.stderr


def test_bad_exports_say_why(tmp_path):
    with pytest.raises(ExportError, match="not a solution folder"):
        export_solution(tmp_path, tmp_path / "out")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "manifest.json").write_text(json.dumps({"stage": "genept", "config": {"steps": 1}}))
    with pytest.raises(ExportError, match="not an adapted classifier"):
        solution_facts(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_text(
        json.dumps({"stage": "x", "config": {"method": "prefix", "model": "minilm"}})
    )
    with pytest.raises(ExportError, match="method 'prefix' has no export; exported methods: finetune, mask"):
        export_solution(tmp_path / "s", tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    (tmp_path / "s" / "manifest.json").write_text(
        json.dumps({"stage": "x", "config": {"method": "finetune", "model": "minilm"}})
    )
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_solution(tmp_path / "s", tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"


def test_wilson_interval():
    lo, hi = wilson_interval(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)  # the textbook value
    lo, hi = wilson_interval(1.0, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)
