import pytest
import torch

from tmlib.core import models
from tmlib.core.training import Batches, TrainConfig, fit, linear_schedule
from tmlib.tasks.classify import Classification, check_labels


def _cfg(**kw):
    base = dict(lr=3e-3, batch_size=8, epochs=4, max_length=16, progress=False, seed=0, warmup_ratio=0.0)
    return TrainConfig(**{**base, **kw})


def test_learns_tiny_task(tiny_task, tokenizer):
    m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    res = fit(m, tiny_task, _cfg(epochs=6), Classification(tokenizer))
    assert res.fit.history[-1]["train_loss"] < res.fit.history[0]["train_loss"]
    assert res.dev["accuracy"] >= 0.75
    assert res.dev["accuracy"] == max(h["accuracy"] for h in res.fit.history)  # best state restored
    # the reported dev metrics are those of the returned model (taken from its eval row, not recomputed);
    # the model's own forward (SDPA, every row of the last layer) gives them up to float rounding
    from tmlib.tasks.classify import EvalBatches, encode, evaluate_classifier

    again = evaluate_classifier(m, EvalBatches(encode(tiny_task["dev"], tokenizer, 16), tokenizer))
    assert res.dev["accuracy"] == again["accuracy"]
    assert res.dev["loss"] == pytest.approx(again["loss"], rel=1e-5)


def test_deterministic(tiny_task, tokenizer):
    runs = []
    for _ in range(2):
        m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
        runs.append(fit(m, tiny_task, _cfg(epochs=2), Classification(tokenizer)).fit.history)
    assert runs[0] == runs[1]


def test_only_passed_params_train(tiny_task, tokenizer):
    m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    biases = [p for n, p in m.named_parameters() if n.endswith("bias")]
    fit(m, tiny_task, _cfg(epochs=1), Classification(tokenizer), params=biases)
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith("bias") for k in changed)


def _equal_nested(a, b, path="") -> list[str]:
    """Paths where two nested structures (dicts, lists, tensors, numbers) differ; [] when identical."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if ok else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path} keys {sorted(map(str, a))} vs {sorted(map(str, b))}"]
        return [d for k in a for d in _equal_nested(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _equal_nested(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


class _Stop(Exception):
    pass


def _resume_runs(tiny_task, tokenizer, tmp_path, monkeypatch, **cfg_kw):
    """An uninterrupted run, a run stopped at step 5, and its restart from the checkpoint; for each: the
    steps it took, the training batches it saw, the weights and RNG state at the last step, its model,
    and the final state of the optimizer and scheduler that fit created."""
    import tmlib.core.training as training

    made = {"optimizer": [], "scheduler": []}
    make_optimizer = training.make_optimizer

    def recording_optimizer(*a, **kw):
        made["optimizer"].append(make_optimizer(*a, **kw))
        return made["optimizer"][-1]

    class RecordingLambdaLR(torch.optim.lr_scheduler.LambdaLR):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made["scheduler"].append(self)

    monkeypatch.setattr(training, "make_optimizer", recording_optimizer)
    monkeypatch.setattr(torch.optim.lr_scheduler, "LambdaLR", RecordingLambdaLR)
    # 24 train examples / batch 8 = 3 steps per epoch, 9 steps; dev evals at 3, 6, 9; checkpoints at 2, 4, 6, 8
    cfg, total = _cfg(epochs=3, checkpoint_every=2, **cfg_kw), 9

    def run(checkpoint_dir=None, stop_at=None):
        m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
        rec = {"model": m, "batches": [], "steps": []}

        def record_batch(module, args, kwargs):
            if module.training:  # training forward passes only, not the dev evaluations
                rec["batches"].append(kwargs["input_ids"].clone())

        m.bert.embeddings.register_forward_pre_hook(record_batch, with_kwargs=True)  # called by either forward

        def on_step(step, model, logs):
            rec["steps"].append(step)
            if step == stop_at:
                raise _Stop
            if step == total:
                rec["last_weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                rec["rng"] = torch.get_rng_state()

        try:
            rec["result"] = fit(
                m, tiny_task, cfg, Classification(tokenizer), checkpoint_dir=checkpoint_dir, on_step=[on_step]
            )
        except _Stop:
            rec["stopped"] = True
        rec["optimizer"] = made["optimizer"][-1].state_dict()
        rec["scheduler"] = made["scheduler"][-1].state_dict()
        return rec

    ref = run()
    first = run(checkpoint_dir=tmp_path, stop_at=5)
    assert first.get("stopped") and torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 4
    return ref, first, run(checkpoint_dir=tmp_path)


def test_resume_after_interrupt(tiny_task, tokenizer, tmp_path, monkeypatch):
    """Kill training mid-run; a restart resumes from the checkpoint and is bit-identical to an
    uninterrupted run: every weight (at the last step and the restored best state), the optimizer's
    state, the scheduler's state, the RNG state, the batches seen in order, and the dev metrics."""
    ref, first, resumed = _resume_runs(tiny_task, tokenizer, tmp_path, monkeypatch)
    assert ref["steps"] == list(range(1, 10)) and len(ref["batches"]) == 9

    # resumed after the last checkpoint (step 4), not from scratch; same number of steps in all
    assert resumed["steps"] == [5, 6, 7, 8, 9]
    assert resumed["result"].fit.steps == ref["result"].fit.steps == 9
    # data order: the interrupted run saw the reference's first 5 batches, the resumed run its last 5 (step 5 redone)
    assert all(torch.equal(a, b) for a, b in zip(first["batches"], ref["batches"][:5])) and len(first["batches"]) == 5
    assert len(resumed["batches"]) == 5
    assert all(torch.equal(a, b) for a, b in zip(resumed["batches"], ref["batches"][4:]))
    # every weight at the last step, and of the best state restored at the end
    assert _equal_nested(resumed["last_weights"], ref["last_weights"]) == []
    assert _equal_nested(resumed["model"].state_dict(), ref["model"].state_dict()) == []
    # optimizer state (AdamW step counts, both moments of every parameter, lr per group) and scheduler state
    assert _equal_nested(resumed["optimizer"], ref["optimizer"]) == []
    assert _equal_nested(resumed["scheduler"], ref["scheduler"]) == []
    assert ref["scheduler"]["last_epoch"] == 9
    assert torch.equal(resumed["rng"], ref["rng"])
    # what the run reports: dev metrics per evaluation (train_loss: see the next test)
    drop = lambda hist: [{k: v for k, v in row.items() if k != "train_loss"} for row in hist]
    assert drop(resumed["result"].fit.history) == drop(ref["result"].fit.history)
    assert resumed["result"].dev == ref["result"].dev and resumed["result"].test == ref["result"].test
    assert not (tmp_path / "checkpoint.pt").exists()
    # the comparison can fail: the interrupted run's state differs from the finished one
    assert _equal_nested(first["optimizer"], ref["optimizer"]) != []


def test_resume_with_length_grouped_batches(tiny_task, tokenizer, tmp_path, monkeypatch):
    """group_by_length (batches of look-alikes, padded to their own longest): the same batches after the resume
    and the same weights to the bit. (The loader once drew its base seed from the global random state at each
    epoch start, so a resumed run drew other dropout masks; this failed then.)"""
    ref, _, resumed = _resume_runs(tiny_task, tokenizer, tmp_path, monkeypatch, group_by_length=True)
    assert len({tuple(b.shape) for b in ref["batches"]}) > 1  # the batches really differ in length
    assert all(torch.equal(a, b) for a, b in zip(resumed["batches"], ref["batches"][4:]))
    assert _equal_nested(resumed["last_weights"], ref["last_weights"]) == []
    assert _equal_nested(resumed["optimizer"], ref["optimizer"]) == []


def test_resume_reports_the_same_train_loss(tiny_task, tokenizer, tmp_path, monkeypatch):
    ref, _, resumed = _resume_runs(tiny_task, tokenizer, tmp_path, monkeypatch)
    assert [h["train_loss"] for h in resumed["result"].fit.history] == [
        h["train_loss"] for h in ref["result"].fit.history
    ]


def test_label_mismatch_is_clear(tiny_task, tokenizer):
    m = models.load_classifier("scratch:tiny", ["a", "b", "c"], seed=0)
    with pytest.raises(ValueError, match="head has 3 outputs but the task has 2 classes"):
        check_labels(m, tiny_task)


def test_no_trainable_params(tiny_task, tokenizer):
    m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(m, tiny_task, _cfg(), Classification(tokenizer), params=[])


def test_bad_config():
    """Each invalid TrainConfig field stops with the message that names the rule it breaks."""
    for bad in (dict(lr=0), dict(lr=-1e-3), dict(batch_size=0), dict(max_length=1)):
        with pytest.raises(ValueError, match=r"lr must be > 0, batch_size >= 1, max_length >= 2"):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match=r"set epochs > 0 or max_steps > 0"):
        TrainConfig(epochs=0, max_steps=0)
    with pytest.raises(ValueError, match=r"schedule must be one of 'linear', 'constant', got 'cosine'"):
        TrainConfig(schedule="cosine")
    TrainConfig(epochs=0, max_steps=5)  # max_steps alone is a valid length


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
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "-m",
            "tmlib",
            "finetune",
            "--task",
            "mr",
            "--model",
            "scratch:tiny",
            "--out",
            str(out),
            "--max-examples",
            "64",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--max-length",
            "32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["processes"] == 2
    assert [h["step"] for h in res["history"]] == [4, 8]  # 64 examples / (8 x 2 processes) = 4 steps per epoch
    assert (out / "model" / "config.json").is_file()


def test_length_grouped_batches_cover_each_example_once_and_group_lengths():
    from tmlib.core.training import LengthGroupedBatches

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
    plain = [perm[i : i + 8] for i in range(0, 203, 8)]
    assert waste(batches) < 0.5 * waste(plain)
    assert list(LengthGroupedBatches(lengths, 8, seed=1, group=4)) == batches  # seeded
    assert list(LengthGroupedBatches(lengths, 8, seed=2, group=4)) != batches  # a new order per epoch seed


def test_make_optimizer_uses_fused_adam_where_available():
    from tmlib.core.training import make_optimizer

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
    with pytest.raises(ValueError, match="mixed_precision must be one of 'auto', 'fp32', 'bf16', 'fp16', 'no'"):
        TrainConfig(mixed_precision="half")
    assert TrainConfig().mixed_precision == TrainConfig(mixed_precision="fp32").mixed_precision == "no"
    assert TrainConfig(mixed_precision="auto").mixed_precision in ("no", "bf16")  # resolved, never "auto"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only error")
def test_fp16_on_cpu_is_a_clear_error(tiny_task, tokenizer):
    m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device.*bf16"):
        fit(m, tiny_task, _cfg(epochs=1, mixed_precision="fp16"), Classification(tokenizer))


def test_bf16_training_matches_fp32_and_leaves_a_plain_fp32_model(tokenizer):
    """bf16 autocast (CPU) trains with nearly fp32's loss; fp32 and bf16 fits alternate in one process;
    after fit the model's forward is no longer autocast (fp32 outputs, parameters fp32)."""
    from tmlib.selective.mlm import MaskedLM, pack_corpus

    texts = [
        "the film is a great , moving story .",
        "a boring mess that never ends .",
        "actors do their best with a thin script .",
        "i loved every minute of it .",
    ] * 4
    packed = pack_corpus(texts, tokenizer, 32, pack=False)
    runs = {}
    for mp in ("no", "bf16", "no"):
        m = models.load_mlm("scratch:tiny", seed=0)
        cfg = TrainConfig(
            lr=1e-3,
            batch_size=8,
            max_steps=3,
            eval_every=1,
            warmup_ratio=0.0,
            progress=False,
            seed=0,
            mixed_precision=mp,
        )
        res = fit(m, packed, cfg, MaskedLM(tokenizer))
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


def test_corrupted_resume_checkpoint_starts_over(tmp_path):
    """A truncated checkpoint.pt (a kill while the disk was full) is not fatal: a warning, a fresh start."""
    from tmlib.core.models import load_classifier, load_tokenizer
    from tmlib.core.training import TrainConfig
    from tmlib.tasks.classify import Classification
    from tmlib.tasks.data import load_task

    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    data = load_task("mr", max_examples=16)
    model = load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    with pytest.warns(UserWarning, match="unreadable"):
        res = fit(
            model,
            data,
            TrainConfig(lr=1e-3, batch_size=8, max_steps=2, max_length=16, progress=False),
            Classification(load_tokenizer("minilm")),
            checkpoint_dir=tmp_path,
        )
    assert res.fit.steps == 2


def test_a_checkpoint_of_another_training_config_is_not_resumed(tmp_path):
    """checkpoint.pt left by another config (another lr, say) warns, naming the file, and training starts over:
    the weights equal a run without that file."""
    from tmlib.core.models import load_classifier, load_tokenizer
    from tmlib.core.training import TrainConfig
    from tmlib.tasks.classify import Classification
    from tmlib.tasks.data import load_task

    data, tok = load_task("mr", max_examples=16), load_tokenizer("minilm")
    cfg = TrainConfig(lr=1e-3, batch_size=8, max_steps=2, max_length=16, progress=False)

    def run(folder):
        model = load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
        assert fit(model, data, cfg, Classification(tok), checkpoint_dir=folder).fit.steps == 2
        return model  # trained in place

    fresh = run(None)
    same_size = len(list(fresh.parameters()))  # as many tensors as this run trains: only the config differs
    torch.save({"config_hash": "another config", "n_params": same_size, "step": 1}, tmp_path / "checkpoint.pt")
    with pytest.warns(UserWarning, match=r"checkpoint.pt was written by another training config"):
        resumed = run(tmp_path)
    for (name, a), b in zip(fresh.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_evaluate_classifier_in_bf16_is_close_to_fp32(tiny_task, tokenizer):
    from tmlib.tasks.classify import EvalBatches, encode, evaluate_classifier

    model = models.load_classifier("scratch:tiny", ["neg", "pos"], seed=0)
    batches = EvalBatches(encode(tiny_task["dev"], tokenizer, 32), tokenizer, batch_size=8)
    fp32 = evaluate_classifier(model, batches)
    bf16 = evaluate_classifier(model, batches, mixed_precision="bf16")
    assert fp32 != bf16  # autocast really ran
    assert abs(fp32["loss"] - bf16["loss"]) < 0.02 * fp32["loss"]
    assert evaluate_classifier(model, batches) == fp32  # and left nothing behind
    with pytest.raises(ValueError, match="mixed_precision"):
        evaluate_classifier(model, batches, mixed_precision="bf8")


def test_kernels_pick_the_forward_and_restore_the_attention(tiny_task, tokenizer):
    """kernels="fast": eager attention during fit (on CPU), the [CLS]-only classifier (the model's own forward is
    never called in training), SDPA again afterwards; "hf": the model's own forward. Both learn the task."""
    from tmlib.core.precision import kernels_context

    seen = {}
    for kernels in ("fast", "hf"):
        m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
        assert m.config._attn_implementation == "sdpa"
        calls, impls = [], []
        m.register_forward_pre_hook(lambda mod, a, kw, calls=calls: calls.append(mod.training), with_kwargs=True)
        hook = lambda step, model, logs, m=m, impls=impls: impls.append((model is m, model.config._attn_implementation))
        res = fit(m, tiny_task, _cfg(epochs=6, kernels=kernels), Classification(tokenizer), on_step=[hook])
        assert m.config._attn_implementation == "sdpa"  # restored after training
        assert res.dev["accuracy"] >= 0.75
        seen[kernels] = (sum(calls), len(calls) - sum(calls), set(impls))  # (training, evaluation) calls
    assert seen["fast"] == (0, 0, {(True, "eager")})  # hooks get the model itself, not the wrapper
    # "hf": the model's own forward in training AND in the dev / test evaluations (not the [CLS]-only one)
    assert seen["hf"][0] > 0 and seen["hf"][1] > 0 and seen["hf"][2] == {(True, "sdpa")}
    m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    with kernels_context(m, "fast", "cuda"):  # on a GPU attention stays SDPA
        assert m.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="kernels must be one of 'fast', 'hf'"):
        _cfg(kernels="triton")


def test_evaluate_classifier_fast_gives_the_models_numbers(tiny_task, tokenizer):
    """kernels="fast" evaluates through the [CLS]-only forward: the model's accuracy and loss up to float rounding."""
    from tmlib.tasks.classify import EvalBatches, encode, evaluate_classifier

    m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    with torch.no_grad():
        m.classifier.weight.mul_(20.0)  # logits far from a tie, so the accuracy is a real comparison
    batches = EvalBatches(encode(tiny_task["dev"], tokenizer, 16), tokenizer)
    fast, hf = (evaluate_classifier(m, batches, kernels=k) for k in ("fast", "hf"))
    assert fast["accuracy"] == hf["accuracy"] and fast["loss"] == pytest.approx(hf["loss"], rel=1e-5)
    calls = []
    h = m.register_forward_pre_hook(lambda *a: calls.append(1))
    evaluate_classifier(m, batches, kernels="fast")
    assert not calls  # the model's own forward was not called
    evaluate_classifier(m, batches, kernels="hf")
    assert calls
    h.remove()


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no GPU here: the CUDA random state's save/restore is exercised only where CUDA is available",
)
def test_resume_restores_the_cuda_random_state(tiny_task, tokenizer, tmp_path, monkeypatch):
    """On a GPU, dropout draws from the CUDA generator: a checkpoint carries its state and a resumed run is
    bit-identical to an uninterrupted one there too."""
    ref, _, resumed = _resume_runs(tiny_task, tokenizer, tmp_path, monkeypatch)
    assert _equal_nested(resumed["last_weights"], ref["last_weights"]) == []


def test_resume_saves_and_restores_the_cuda_random_state_through_its_seam(tiny_task, tokenizer, tmp_path, monkeypatch):
    """Without a GPU too: a stand-in for the CUDA generators (``training.CUDA_RNG``, the one seam over torch.cuda)
    has its state saved in the checkpoint and set back, unchanged, when the run resumes; nothing else sees CUDA."""
    import tmlib.core.training as training

    class StandIn:
        def __init__(self):
            self.state, self.restored = [torch.tensor([7, 1, 3], dtype=torch.uint8)], []

        def available(self):
            return True

        def get(self):
            return [t.clone() for t in self.state]

        def set(self, states):
            self.restored.append([t.clone() for t in states])

    rng = StandIn()
    monkeypatch.setattr(training, "CUDA_RNG", rng)
    _, _, resumed = _resume_runs(tiny_task, tokenizer, tmp_path, monkeypatch)
    assert "result" in resumed and len(rng.restored) == 1  # the resumed run set it once, from the checkpoint
    assert torch.equal(rng.restored[0][0], torch.tensor([7, 1, 3], dtype=torch.uint8))


def test_trackers_get_every_step_and_evaluation(tiny_task, tokenizer):
    """fit(log_with=...) feeds accelerate's trackers: each step's loss and lr and each dev evaluation, under the
    run's name; the history and weights are those of a run without trackers."""
    from accelerate.tracking import GeneralTracker

    from tmlib.tasks.classify import ClassifierCollator, EvalBatches, _dev_metrics, encode

    class Recorder(GeneralTracker):
        name, requires_logging_directory = "recorder", False

        def __init__(self):
            super().__init__()
            self.run, self.rows, self.ended = None, [], False

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            pass

        def log(self, values, step=None, **kwargs):
            self.rows.append((step, dict(values)))

        def finish(self):
            self.ended = True

    enc = {s: encode(tiny_task[s], tokenizer, 16) for s in ("train", "dev")}
    dev = EvalBatches(enc["dev"], tokenizer)
    runs = []
    for trackers in (None, [Recorder()]):
        m = models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
        res = fit(
            m,
            enc["train"],
            _cfg(epochs=2),
            Batches(ClassifierCollator(tokenizer), evaluate=lambda net: _dev_metrics(net, dev, "fast")),
            log_with=trackers,
            desc="tiny run",
        )
        runs.append((res.history, [p.detach().clone() for p in m.parameters()]))
    rec = trackers[0]
    steps = [s for s, v in rec.rows if "loss" in v]
    evals = [(s, v) for s, v in rec.rows if "dev_accuracy" in v]
    assert steps == list(range(1, res.steps + 1)) and rec.ended
    assert [s for s, _ in evals] == [h["step"] for h in res.history]
    assert [v["dev_accuracy"] for _, v in evals] == [h["accuracy"] for h in res.history]
    assert runs[0][0] == runs[1][0] and all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
