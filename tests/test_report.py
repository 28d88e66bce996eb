"""tmlib.report: the results document comes from a run folder's files."""

import json

import pandas as pd
import pytest

from tmlib.report import results_document


def test_results_document_is_generated_from_the_run_files(tmp_path):
    run = tmp_path / "runs" / "default"
    d3, d4 = run / "03_masking_vs_finetuning", run / "04_loss_landscape"
    d3.mkdir(parents=True)
    d4.mkdir(parents=True)
    pd.DataFrame(
        [
            {
                "task": "mr",
                "comparison": "mask - finetune",
                "a": "mask",
                "b": "finetune",
                "n_seeds": 5,
                "gap_mean": -0.61,
                "gap_std": 1.31,
                "p": 0.36,
                "ci95": 1.63,
                "detectable_gap": 2.43,
                "sampling_sd": 0.64,
                "test_n": 3600,
                "sentence": "mask − fine-tune = -0.6 ± 1.6 points (p = 0.36, 5 seeds)",
            }
        ]
    ).to_csv(d3 / "gaps.csv", index=False)
    pd.DataFrame([{"task": "mr", "method": "mask", "lr": 0.003, "n_seeds": 5, "test_mean": 72.5}]).to_csv(
        d3 / "summary.csv", index=False
    )
    (d4 / "summary.json").write_text(json.dumps({"finding": "stays within 1 point: True", "curve_finding": None}))
    text = results_document(run)
    assert "mask − fine-tune = -0.6 ± 1.6 points" in text and "3600 test examples" in text
    assert "| mr | mask | 0.003 | 5 | 72.5 |" in text and "stays within 1 point: True" in text
    assert "01_selective_masking" not in text  # a notebook that did not run has no section
    new = run / "06_new_study"  # a notebook report.py does not know: its tables, under their file names
    new.mkdir()
    pd.DataFrame([{"setting": "x", "acc": 0.5}]).to_csv(new / "table.csv", index=False)
    assert "## 06_new_study\n\n### table.csv\n\n| setting | acc |" in results_document(run)
    with pytest.raises(FileNotFoundError, match="make run"):
        results_document(tmp_path / "nothing")


@pytest.mark.parametrize("results", ["results.json", "results_fp32.json"])
def test_every_number_the_readme_quotes_is_in_the_committed_results(results):
    """The README's results sections are what `tmlib report --readme` generates from docs/results.json (the
    results at a glance) and docs/results_fp32.json (the same run in fp32, as a CPU without native bf16 computes
    it), and every number in them is one of that file's numbers (a hand-edited or stale table fails)."""
    import json
    import re
    from pathlib import Path

    from tmlib.report import readme_markers, readme_table

    root = Path(__file__).resolve().parent.parent
    numbers = json.loads((root / "docs" / results).read_text())
    assert ("fp32" in results) == (numbers.get("arithmetic") == "fp32")
    start, end = readme_markers(numbers)
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split(start, 1)[1].split(end, 1)[0]
    assert section.strip() == readme_table(numbers).strip()

    def flat(obj):
        if isinstance(obj, dict):
            for v in obj.values():
                yield from flat(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from flat(v)
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
            yield abs(float(obj))

    known = set(flat(numbers))
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith(("| comparison", "| task"))]
    rows += [ln.split("at most", 1)[1] for ln in section.splitlines() if "at most" in ln]
    quoted = [abs(float(x)) for ln in rows for x in re.findall(r"(?<![\w.])[+-]?\d+(?:\.\d+)?", ln)]
    assert quoted and all(q in known for q in quoted), [q for q in quoted if q not in known]
