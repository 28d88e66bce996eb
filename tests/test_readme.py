"""The README's own-data commands, run as written at smoke size: the worked example per paper on a latin-1 file
with its own column names (a tiny random backbone and a few steps instead of MiniLM and the full budgets)."""

import glob
import re
import shlex
from pathlib import Path

import pytest

from tmlib.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMOKE = {  # per verb: the sizes appended (later options win in argparse) and the options dropped
    "adapt": [
        "--model",
        "scratch:tiny",
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
        "--seeds",
        "0",
    ],
    "predict": ["--model", "scratch:tiny", "--max-length", "16"],
    "export": [],
    "importance": [
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
    ],
    "mlm": ["--model", "scratch:tiny", "--max-steps", "2", "--batch-size", "4", "--max-length", "16"],
    "suite": ["--params", "smoke", "--no-calibration", "--out"],
}


def worked_example() -> list[list[str]]:
    """The commands of the README's worked-example block, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("A worked example per paper", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", " ", block)
    return [
        shlex.split(ln.split("#", 1)[0]) for ln in joined.splitlines() if ln.startswith(".venv/bin/python -m tmlib")
    ]


@pytest.mark.slow
def test_the_readme_worked_example_runs(tmp_path, monkeypatch):
    cmds = worked_example()
    assert [c[3] for c in cmds] == ["adapt", "adapt", "predict", "export", "importance", "mlm", "suite"]
    monkeypatch.chdir(tmp_path)
    good, bad = "caf" + chr(233) + " was lovely", "awful and dull"  # chr(233): a latin-1 byte, invalid UTF-8
    rows = [f"{'positive' if i % 2 else 'negative'},0.9,{good if i % 2 else bad} tweet {i}" for i in range(60)]
    Path("tweets.csv").write_bytes(("sentiment,confidence,text\n" + "\n".join(rows) + "\n").encode("latin-1"))
    Path("unlabelled_tweets.txt").write_text("\n".join(f"a tweet about a film, number {i}" for i in range(30)))
    Path("new.csv").write_text("text\nwhat a lovely film\n")
    for cmd in cmds:
        verb, args = cmd[3], cmd[4:]
        if verb in ("predict", "export"):  # the mask the first command saved
            args = [
                re.sub(
                    r"runs/mask_tweets/solutions/<task>/(.*)",
                    lambda m: glob.glob(f"runs/mask_tweets/solutions/*/{m.group(1)}")[0],
                    a,
                )
                for a in args
            ]
        if verb == "suite":
            out = str(tmp_path / "suite")
            args = [a for a in args if a not in ("--params", "default")] + SMOKE["suite"] + [out]
        else:
            args = args + SMOKE[verb]
        assert main([verb, *args]) == 0, (verb, args)
    assert Path("predictions.csv").read_text().startswith("text,tweets")
    card = Path("exports/tweets-mask/README.md").read_text()  # the export: card and a scratch backbone beside it
    assert "held-out test accuracy" in card and Path("exports/tweets-mask/backbone/config.json").is_file()
    assert (tmp_path / "suite" / "01_selective_masking" / "gaps.csv").is_file()
