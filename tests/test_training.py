import pytest
import torch

from tmlib import models
from tmlib.training import TrainConfig, check_labels, linear_schedule, train_classifier


def _cfg(**kw):
    base = dict(lr=3e-3, batch_size=8, epochs=4, max_length=16, progress=False, seed=0, warmup_ratio=0.0)
    return TrainConfig(**{**base, **kw})


def test_learns_tiny_task(tiny_task, tokenizer):
    m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    res = train_classifier(m, tiny_task, tokenizer, _cfg(epochs=6))
    assert res.fit.history[-1]["train_loss"] < res.fit.history[0]["train_loss"]
    assert res.dev["accuracy"] >= 0.75
    assert res.dev["accuracy"] == max(h["accuracy"] for h in res.fit.history)  # best state restored
    # the reported dev metrics are those of the returned model (taken from its eval row, not recomputed)
    from tmlib.training import EvalBatches, encode, evaluate_classifier

    assert res.dev == evaluate_classifier(m, EvalBatches(encode(tiny_task["dev"], tokenizer, 16), tokenizer))


def test_deterministic(tiny_task, tokenizer):
    runs = []
    for _ in range(2):
        m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
        runs.append(train_classifier(m, tiny_task, tokenizer, _cfg(epochs=2)).fit.history)
    assert runs[0] == runs[1]


def test_only_passed_params_train(tiny_task, tokenizer):
    m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    biases = [p for n, p in m.named_parameters() if n.endswith("bias")]
    train_classifier(m, tiny_task, tokenizer, _cfg(epochs=1), params=biases)
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith("bias") for k in changed)


def test_resume_after_interrupt(tiny_task, tokenizer, tmp_path):
    """Kill training mid-run; a restart resumes from the checkpoint and ends where an uninterrupted run ends."""
    cfg = _cfg(epochs=3, checkpoint_every=2)
    ref = train_classifier(models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0),
                           tiny_task, tokenizer, cfg)

    class Stop(Exception):
        pass

    def interrupt(step, model, logs):
        if step == 5:
            raise Stop

    m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    with pytest.raises(Stop):
        train_classifier(m, tiny_task, tokenizer, cfg, checkpoint_dir=tmp_path, on_step=[interrupt])
    assert (tmp_path / "checkpoint.pt").is_file()
    seen = []
    m2 = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    res = train_classifier(m2, tiny_task, tokenizer, cfg, checkpoint_dir=tmp_path,
                           on_step=[lambda s, m, l: seen.append(s)])
    assert seen[0] == 5  # resumed after the last checkpoint (step 4), not from scratch
    assert res.fit.steps == ref.fit.steps
    assert res.dev == pytest.approx(ref.dev)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_label_mismatch_is_clear(tiny_task, tokenizer):
    m = models.load_classifier("scratch:tiny", ["a", "b", "c"], seed=0)
    with pytest.raises(ValueError, match="head has 3 outputs but the task has 2 classes"):
        check_labels(m, tiny_task)


def test_no_trainable_params(tiny_task, tokenizer):
    m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_classifier(m, tiny_task, tokenizer, _cfg(), params=[])


def test_bad_config():
    with pytest.raises(ValueError):
        TrainConfig(lr=0)


def test_linear_schedule():
    assert linear_schedule(0, 2, 10) == 0.5 and linear_schedule(1, 2, 10) == 1.0
    assert linear_schedule(6, 2, 10) == 0.5 and linear_schedule(10, 2, 10) == 0.0


@pytest.mark.slow
def test_data_parallel_launch(tmp_path):
    """The CLI entry point runs unchanged with 2 data-parallel processes (gloo on CPU, as NCCL on GPUs)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "run"
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "tmlib", "finetune", "--task", "mr",
                           "--model", "scratch:tiny", "--out", str(out), "--max-examples", "64", "--epochs", "2",
                           "--batch-size", "8", "--max-length", "32"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["processes"] == 2
    assert [h["step"] for h in res["history"]] == [4, 8]  # 64 examples / (8 x 2 processes) = 4 steps per epoch
    assert (out / "model" / "config.json").is_file()


def test_length_grouped_batches_cover_each_example_once_and_group_lengths():
    from tmlib.training import LengthGroupedBatches

    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 60, (203,), generator=rng).tolist()
    sampler = LengthGroupedBatches(lengths, batch_size=8, seed=1, group=4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 26
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(203))
    # padding waste: positions padded per batch, grouped vs a plain shuffle of the same batch size
    def waste(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)
    perm = torch.randperm(203, generator=torch.Generator().manual_seed(1)).tolist()
    plain = [perm[i:i + 8] for i in range(0, 203, 8)]
    assert waste(batches) < 0.5 * waste(plain)
    assert list(LengthGroupedBatches(lengths, 8, seed=1, group=4)) == batches       # seeded
    assert list(LengthGroupedBatches(lengths, 8, seed=2, group=4)) != batches       # a new order per epoch seed


def test_make_optimizer_uses_fused_adam_where_available():
    from tmlib.training import make_optimizer

    p = torch.nn.Parameter(torch.zeros(3))
    opt = make_optimizer(torch.optim.AdamW, [{"params": [p]}], 1e-3)
    assert opt.defaults["fused"] is True
    sgd = make_optimizer(torch.optim.SGD, [{"params": [p]}], 1e-3)
    assert "fused" not in sgd.defaults or not sgd.defaults["fused"]
    # same update as the per-parameter loop
    q = torch.nn.Parameter(torch.zeros(3))
    ref = torch.optim.AdamW([q], lr=1e-3)
    for o, w in ((opt, p), (ref, q)):
        w.grad = torch.tensor([1.0, -2.0, 0.5])
        o.step()
    torch.testing.assert_close(p.detach(), q.detach())


def test_mixed_precision_config_is_validated():
    with pytest.raises(ValueError, match="mixed_precision must be one of 'no', 'bf16', 'fp16'"):
        TrainConfig(mixed_precision="fp32")
    assert TrainConfig().mixed_precision == "no"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only error")
def test_fp16_on_cpu_is_a_clear_error(tiny_task, tokenizer):
    m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device.*bf16"):
        train_classifier(m, tiny_task, tokenizer, _cfg(epochs=1, mixed_precision="fp16"))


def test_bf16_training_matches_fp32_and_leaves_a_plain_fp32_model(tokenizer):
    """bf16 autocast (CPU) trains with nearly fp32's loss; fp32 and bf16 fits alternate in one process;
    after fit the model's forward is no longer autocast (fp32 outputs, parameters fp32)."""
    from tmlib.mlm import pack_corpus, train_mlm

    texts = ["the film is a great , moving story .", "a boring mess that never ends .",
             "actors do their best with a thin script .", "i loved every minute of it ."] * 4
    packed = pack_corpus(texts, tokenizer, 32, pack=False)
    runs = {}
    for mp in ("no", "bf16", "no"):
        m = models.load_mlm("scratch:tiny", seed=0)
        cfg = TrainConfig(lr=1e-3, batch_size=8, max_steps=3, eval_every=1, warmup_ratio=0.0, progress=False,
                          seed=0, mixed_precision=mp)
        res = train_mlm(m, packed, tokenizer, cfg)
        losses = [h["train_loss"] for h in res.history]
        if mp in runs:
            assert losses == runs[mp][0]  # fp32 again after bf16: same process, same numbers
        runs[mp] = (losses, m)
    fp32, bf16 = runs["no"][0], runs["bf16"][0]
    assert fp32 != bf16  # bf16 autocast really ran
    assert all(abs(a - b) < 0.02 * a for a, b in zip(fp32, bf16))
    m = runs["bf16"][1]
    assert all(p.dtype == torch.float32 for p in m.parameters())
    x = torch.tensor([[101, 1996, 2143, 102]])
    assert m(input_ids=x).logits.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(input_ids=x).logits.dtype == torch.bfloat16  # sanity: autocast would show
