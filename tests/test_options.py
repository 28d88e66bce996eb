"""CLI options come from the config dataclasses: adapt's options and defaults are notebook 03's by construction."""

import argparse

import pytest

from tmlib.cli import ADAPT_SINGLE, ADAPT_SKIP, _adapt_config, _adapt_options
from tmlib.core.config import ConfigError, flat_defaults
from tmlib.experiments.masking import MaskingConfig
from tmlib.options import add_options, cli_message, field_comments, flag


def _parser():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="o")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lr-grid", nargs="+", default=None)
    p.add_argument("--schedule", default=None)
    _adapt_options(p)
    return p


def test_adapt_has_every_parameter_of_notebook_03_with_its_default():
    args = _parser().parse_args([])
    for name, default in flat_defaults(MaskingConfig).items():
        if name in ADAPT_SKIP:
            continue
        value = getattr(args, ADAPT_SINGLE.get(name, name))
        expected = list(default)[0] if name in ADAPT_SINGLE else default
        assert value == (list(expected) if isinstance(expected, tuple) else expected), name
    cfg = _adapt_config(_parser().parse_args(["--task", "mr"]))
    reference = MaskingConfig(tasks=["mr"], methods=["finetune"], max_lengths=[64], max_train=[200], out_dir="o")
    assert cfg == reference  # the same config notebook 03 builds for that task and method


def test_help_shows_every_default_and_the_field_comment():
    text = _parser().format_help()
    for name in flat_defaults(MaskingConfig):
        if name not in ADAPT_SKIP:
            assert flag(ADAPT_SINGLE.get(name, name)) in text, name
    assert text.count("(default:") >= len(flat_defaults(MaskingConfig)) - len(ADAPT_SKIP)
    assert "threshold: a weight is kept where its score > tau (default: 0.01)" in " ".join(text.split())


def test_lr_flags_follow_notebook_03s_rules():
    p = _parser()
    fixed = _adapt_config(p.parse_args(["--task", "csv:x.csv", "--method", "mask", "--lr", "0.02"]))
    assert fixed.lr["mask"] == {"csv:x.csv": 0.02} and fixed.lr_grid == {}
    grid = _adapt_config(p.parse_args(["--task", "csv:x.csv", "--method", "mask", "--lr-grid", "1e-3", "2e-3"]))
    assert grid.lr_grid == {"mask": [1e-3, 2e-3]} and "mask" not in grid.lr
    none = _adapt_config(p.parse_args(["--method", "mask", "--lr-grid", "none"]))
    assert none.lr_grid == {} and none.lr == {}
    default = _adapt_config(p.parse_args(["--method", "mask"]))
    assert default.lr_grid == flat_defaults(MaskingConfig)["lr_grid"]  # notebook 03's grid


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--max-dev", "-1"], "--max-dev must be a whole number"),
        (["--seeds", "0", "--max-length", "4"], "--max-length must be >= 8"),
        (["--mask-init-sparsity", "2"], "--mask-init-sparsity must be in (0, 1)"),
    ],
)
def test_errors_name_the_flag(argv, says):
    with pytest.raises(ConfigError) as err:
        _adapt_config(_parser().parse_args(argv))
    assert says in str(err.value) and "max_dev" not in str(err.value) and "init_sparsity " not in str(err.value)


def test_prose_is_not_rewritten():
    assert cli_message("valid methods: finetune", MaskingConfig) == "valid methods: finetune"
    assert cli_message("seeds is empty", MaskingConfig, {"seeds": "seeds"}) == "--seeds is empty"


def test_field_comments_read_continuations_and_comments_above():
    from dataclasses import dataclass

    @dataclass
    class C:
        a: int = 1  # the a
        # ^ more about a
        # above b
        b: str = "x"

    assert field_comments(C) == {"a": "the a more about a", "b": "above b"}
    p = argparse.ArgumentParser()
    add_options(p, C)
    assert p.parse_args(["--a", "3"]).a == 3 and p.parse_args([]).b == "x"
