"""How a run computes: "auto" picks bf16 only where it runs natively (a timed probe), fp32's names survive YAML, an
explicit bf16 on a slow CPU warns, and the cache keys carry the resolved arithmetic."""

import os
import subprocess
import sys

import pytest

from tmlib.core import precision as P
from tmlib.core.config import ConfigError, from_flat, parse_yaml

# The probe's times as measured (s per 64 x 384 @ 384 x 384 matmul, 2 threads): an AMD EPYC with avx512_bf16 and the
# same host limited to AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2, as on a Zen 3 host)
NATIVE = (5.95e-5, 3.28e-5)
EMULATED = (6.42e-5, 9.00e-3)

AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


@pytest.fixture
def fresh(monkeypatch):
    """A process whose "auto" is not decided yet (the decision is per process)."""
    monkeypatch.setattr(P, "_ARITHMETIC", {})
    monkeypatch.setattr(P, "_WARNED", set())
    monkeypatch.delenv(P.AUTO_ENV, raising=False)
    monkeypatch.delenv(P.AUTO_ENV + "_REASON", raising=False)
    return monkeypatch


def test_decision_on_measured_probes_of_both_kinds_of_cpu():
    native = P.decide_cpu(*NATIVE, "AVX512")
    assert native.mixed_precision == "bf16" and native.name == "bf16" and "native bf16" in native.reason
    emulated = P.decide_cpu(*EMULATED, "AVX2")
    assert emulated.mixed_precision == "no" and emulated.name == "fp32" and "no native bf16" in emulated.reason
    assert round(emulated.bf16_slowdown) == 140
    assert P.decide_cpu(1.0, 1.0).name == "fp32"  # bf16 must be faster, not as fast
    rec = emulated.record()
    assert rec["arithmetic"] == "fp32" and rec["bf16_over_fp32_matmul"] == pytest.approx(140.2, abs=0.1)


@pytest.mark.parametrize(
    "given, canonical",
    [("fp32", "no"), ("no", "no"), (False, "no"), ("bf16", "bf16"), ("auto", "auto"), ("fp16", "fp16")],
)
def test_names_of_each_setting(given, canonical):
    assert P.check_mixed_precision(given) == canonical


@pytest.mark.parametrize("bad", ["half", "", True, 0, None, "FP32"])
def test_unknown_settings_are_refused_with_the_valid_names(bad):
    with pytest.raises(ValueError, match="mixed_precision must be one of 'auto', 'fp32', 'bf16'"):
        P.check_mixed_precision(bad)


def test_fp16_needs_cuda():
    with pytest.raises(ValueError, match="needs a CUDA device.*'auto'"):
        P.check_mixed_precision("fp16", "cpu")


def test_auto_follows_the_forced_environment_and_is_decided_once(fresh):
    fresh.setenv(P.AUTO_ENV, "fp32")
    assert P.resolve_mixed_precision("auto", "cpu") == "no"
    fresh.setenv(P.AUTO_ENV, "bf16")
    assert P.resolve_mixed_precision("auto", "cpu") == "no", "decided once per process"
    fresh.setattr(P, "_ARITHMETIC", {})
    assert P.resolve_mixed_precision("auto", "cpu") == "bf16"
    fresh.setattr(P, "_ARITHMETIC", {})
    fresh.setenv(P.AUTO_ENV, "fast")
    with pytest.raises(ValueError, match="TMLIB_AUTO_PRECISION='fast'.*bf16 or fp32"):
        P.arithmetic("cpu")


def test_auto_measures_when_not_forced(fresh):
    fresh.setattr(P, "_PROBE", [EMULATED])
    assert P.resolve_mixed_precision("auto", "cpu") == "no"
    assert P.arithmetic("cpu").bf16_matmul_s == EMULATED[1]
    fresh.setattr(P, "_ARITHMETIC", {})
    fresh.setattr(P, "_PROBE", [NATIVE])
    assert P.resolve_mixed_precision("auto", "cpu") == "bf16"


def test_explicit_bf16_on_a_slow_cpu_warns_with_the_slowdown_and_the_fix(fresh):
    fresh.setattr(P, "_PROBE", [EMULATED])
    with pytest.warns(RuntimeWarning, match=r"measured 140x slower than fp32.*'auto' or 'fp32'"):
        assert P.resolve_mixed_precision("bf16", "cpu") == "bf16"
    fresh.setattr(P, "_WARNED", set())
    fresh.setattr(P, "_PROBE", [NATIVE])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.resolve_mixed_precision("bf16", "cpu") == "bf16"  # native: no warning


def _in_a_process(code: str, env: dict) -> str:
    env = {**os.environ, **env}
    env.pop(P.AUTO_ENV, None)
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_auto_picks_fp32_where_bf16_is_emulated():
    """A CPU without native bf16, for real on an AVX2 host, simulated on an avx512_bf16 host by limiting torch's and
    oneDNN's kernels to AVX2 (the probe then measures bf16 10-140x slower, as on a Zen 3 host)."""
    code = (
        "from tmlib.core import precision as P; a = P.arithmetic('cpu'); print(a.name, round(a.bf16_slowdown, 1)); "
        "P.resolve_mixed_precision('bf16', 'cpu')"
    )
    out = _in_a_process(code, AVX2_ONLY)
    name, slowdown = out.split()[:2]
    assert name == "fp32" and float(slowdown) > 3, out
    assert "RuntimeWarning: mixed_precision='bf16' on a CPU without native bf16" in out


def test_auto_on_this_host_agrees_with_torch_capability(fresh):
    """Where oneDNN reports native bf16 the probe measures it faster; where it does not, slower."""
    import torch

    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert P.arithmetic("cpu").name == ("bf16" if native else "fp32")


def test_yaml_keeps_documented_words_as_strings():
    assert parse_yaml("a: no\nb: off\nc: yes\nd: on\ne: true\nf: False") == {
        "a": "no",
        "b": "off",
        "c": "yes",
        "d": "on",
        "e": True,
        "f": False,
    }


def test_configs_take_every_spelling_of_fp32_and_resolve_auto(fresh):
    from tmlib.experiments.masking import MaskingConfig

    fresh.setenv(P.AUTO_ENV, "fp32")
    for given in ("no", "fp32", parse_yaml("x: no")["x"]):
        cfg = from_flat(MaskingConfig, {"mixed_precision": given, "eval_mixed_precision": given})
        assert cfg.mixed_precision == cfg.eval_mixed_precision == "no"
    assert from_flat(MaskingConfig, {}).mixed_precision == "no"  # auto, resolved here to fp32
    with pytest.raises(ConfigError, match="YAML read an unquoted word as a boolean; quote it"):
        from_flat(MaskingConfig, {"mixed_precision": False})


def test_cache_keys_carry_the_resolved_arithmetic(fresh):
    """An fp32 host never loads a bf16 artifact and the reverse: "auto" is resolved before any key is made."""
    from tmlib.experiments.selective.config import SelectiveConfig
    from tmlib.experiments.selective.stages import MLMRun

    keys = {}
    for forced in ("fp32", "bf16"):
        fresh.setattr(P, "_ARITHMETIC", {})
        fresh.setenv(P.AUTO_ENV, forced)
        run = MLMRun(steps=(10,), lr=1e-4, batch_size=8, max_length=32, warmup_ratio=0.0, seed=0)
        keys[forced] = run.key()
        assert SelectiveConfig().mixed_precision == ("no" if forced == "fp32" else "bf16")
    assert keys["fp32"]["mixed_precision"] == "no" and keys["bf16"]["mixed_precision"] == "bf16"
    assert "auto" not in str(keys)


@pytest.mark.parametrize(
    "argv, value",
    [
        (["-p", "03.mixed_precision=no"], "no"),
        (["-p", "mixed_precision", "off"], "off"),
        (["-p", "03.mixed_precision=fp32"], "fp32"),
        (["-p", "x=true"], True),
    ],
)
def test_suite_p_values_keep_words_that_yaml_1_1_reads_as_booleans(monkeypatch, argv, value):
    import tmlib.suite
    from tmlib.cli import main

    seen = {}
    monkeypatch.setattr(tmlib.suite, "run_suite", lambda *a, extra=None, **k: seen.update(extra))
    assert main(["suite", "--params", "smoke", *argv]) == 0
    assert list(seen.values()) == [value]


def test_the_probe_times_one_thread_and_gives_the_threads_back(monkeypatch):
    """The probe measures the core's instructions on one thread (a multi-threaded kernel on a busy host measures
    the other processes), then restores the process's thread count."""
    import torch

    seen = []
    real_mm = torch.Tensor.__matmul__

    def mm(x, y):
        seen.append(torch.get_num_threads())
        return real_mm(x, y)

    monkeypatch.setattr(torch.Tensor, "__matmul__", mm)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        P.matmul_probe(rows=8, width=16, reps=1, rounds=1)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
