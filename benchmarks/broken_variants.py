"""Broken variants of tmlib: each a plausible careless edit of one function, applied alone to a temporary git
worktree of HEAD, and the tests docs/reliability.md cites for that promise run against it. A variant is caught when
at least one of its tests fails. Writes benchmarks/results/broken_variants.csv.

    python benchmarks/broken_variants.py            # every variant (about 8 minutes on 2 cores)
    python benchmarks/broken_variants.py R6 R20     # some of them
"""

# ruff: noqa: E501 - each variant is an exact edit of a source line, long as the line it edits

import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = [
    (
        "R1 malformed YAML read as an empty file",
        "tmlib/core/config.py",
        """raise ConfigError(f"malformed YAML in {path}{loc}: {getattr(exc, 'problem', exc)}; fix the syntax") from exc""",
        "return {}",
        [
            "tests/test_config.py::test_load_yaml_errors",
            "tests/test_notebooks.py::test_malformed_yaml_stops_before_running",
        ],
    ),
    (
        "R2 unknown flat parameter dropped silently",
        "tmlib/core/config.py",
        "        else:\n            unknown.append(key)\n",
        "        else:\n            pass\n",
        [
            "tests/test_config.py::test_notebook_config_rejects_injected_typo",
            "tests/test_notebooks.py::test_runner_rejects_unknown_parameter_and_keeps_good_output",
        ],
    ),
    (
        "R3 integer fields accept digit strings",
        "tmlib/core/config.py",
        """    if isinstance(value, bool) or not isinstance(value, int):\n        raise ConfigError(f"{where}: expected an integer""",
        """    if isinstance(value, str) and value.isdigit():\n        value = int(value)\n    if isinstance(value, bool) or not isinstance(value, int):\n        raise ConfigError(f"{where}: expected an integer""",
        ["tests/test_config.py::test_from_dict_rejects"],
    ),
    (
        "R4 missing parameter set without the list of sets",
        "tmlib/suite.py",
        """f"available sets: {', '.join(parameter_sets(ndir, pdir)) or 'none'}\"""",
        """"see papermill_params/\"""",
        ["tests/test_notebooks.py::test_missing_parameter_set"],
    ),
    (
        "R5 unknown dataset without the builtin names",
        "tmlib/tasks/data.py",
        """f"unknown dataset {name!r}; builtin tasks: {', '.join(TASKS)}; or use""",
        """f"unknown dataset {name!r}; or use""",
        ["tests/test_data.py::test_unknown_and_missing"],
    ),
    (
        "R6 hub check ignores HF_HUB_OFFLINE (tries the network)",
        "tmlib/core/hub.py",
        """    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):\n        return False\n""",
        "",
        [
            "tests/test_data.py::test_hub_dataset_fails_fast_offline",
            "tests/test_models.py::test_hub_name_fails_fast_offline",
        ],
    ),
    (
        "R7 data-error row numbers from 0",
        "tmlib/tasks/data.py",
        "empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]",
        "empty = [i for i, t in enumerate(texts) if not t.strip()]",
        ["tests/test_data.py::test_bad_user_files"],
    ),
    (
        "R8 non-UTF-8 bytes replaced instead of refused",
        "tmlib/tasks/data.py",
        "    dec = codecs.getincrementaldecoder(encoding)()",
        '    dec = codecs.getincrementaldecoder(encoding)(errors="replace")',
        ["tests/test_data.py::test_non_utf8_file", "tests/test_data.py::test_json_array_and_more_bad_files"],
    ),
    (
        "R9 truncation not recorded",
        "tmlib/importance/attribution.py",
        "truncated.append(len(full[i]) > len(pos))",
        "truncated.append(False)",
        ["tests/test_attribution.py::test_special_tokens_excluded_and_truncation_recorded"],
    ),
    (
        "R10 a head larger than the label set accepted",
        "tmlib/tasks/classify.py",
        "if n_head is not None and n_head != len(names):",
        "if n_head is not None and n_head < len(names):",
        ["tests/test_training.py::test_label_mismatch_is_clear"],
    ),
    (
        "R11 mask file's architecture not compared",
        "tmlib/masking/packing.py",
        """    if meta["model_type"] != model_type:\n        raise MaskFileError(""",
        """    if False:\n        raise MaskFileError(""",
        ["tests/test_masking_packing.py::test_wrong_architecture_shape_or_weights_give_clear_errors"],
    ),
    (
        "R12a export writes into a non-empty folder",
        "tmlib/export.py",
        "if out.exists() and any(out.iterdir()):",
        "if out.exists() and not out.is_dir():",
        ["tests/test_export.py::test_bad_exports_say_why"],
    ),
    (
        "R12b exported mask applied to any backbone",
        "tmlib/export_snippets/apply_mask.py",
        """    if found != meta["fingerprint"]:""",
        """    if False:""",
        ["tests/test_export.py::test_a_mask_refuses_another_backbone"],
    ),
    (
        "R13 YAML 1.1 booleans (no -> False)",
        "tmlib/core/config.py",
        """if tag != "tag:yaml.org,2002:bool\"""",
        """if True""",
        [
            "tests/test_precision.py::test_suite_p_values_keep_words_that_yaml_1_1_reads_as_booleans",
            "tests/test_precision.py::test_configs_take_every_spelling_of_fp32_and_resolve_auto",
        ],
    ),
    (
        "R14 a failed notebook written over the good one",
        "tmlib/suite.py",
        """            os.replace(partial, out / f"{notebook.stem}.failed.ipynb")""",
        """            os.replace(partial, target)""",
        ["tests/test_faults.py::test_kernel_dying_mid_notebook_keeps_the_failed_notebook_and_the_good_one"],
    ),
    (
        "R15 an unreadable resume checkpoint crashes",
        "tmlib/core/training.py",
        "        except Exception as exc:  # a truncated or corrupted checkpoint: start over rather than crash",
        "        except KeyError as exc:  # a truncated or corrupted checkpoint: start over rather than crash",
        ["tests/test_training.py::test_corrupted_resume_checkpoint_starts_over"],
    ),
    (
        "R16 resume checkpoint checked by tensor count only",
        "tmlib/core/training.py",
        """if state.get("config_hash") != self.key or state.get("n_params") != self.n_params:""",
        """if state.get("n_params") != self.n_params:""",
        ["tests/test_training.py::test_a_checkpoint_of_another_training_config_is_not_resumed"],
    ),
    (
        "R18 empty aspect rows numbered from 0",
        "tmlib/tasks/data.py",
        "empty = [i + 1 for i, v in enumerate(vals) if not v.strip()]",
        "empty = [i for i, v in enumerate(vals) if not v.strip()]",
        ["tests/test_pairs.py::test_pair_and_aspect_errors"],
    ),
    (
        "R17 txt corpus lines split at U+2028 / U+0085",
        "tmlib/tasks/data.py",
        "            return [s for s in (line.strip() for line in f) if s]",
        "            return [s for s in (line.strip() for line in f.read().splitlines()) if s]",
        ["tests/test_data.py::test_jsonl_and_txt_with_unicode_line_breaks"],
    ),
    (
        "R19 a failed artifact write escapes as a raw OSError",
        "tmlib/core/runs.py",
        "            atomic_save(self.root / stage.name, write)\n        except OSError as exc:",
        "            atomic_save(self.root / stage.name, write)\n        except KeyError as exc:",
        [
            "tests/test_faults.py::test_a_really_full_disk_is_a_clear_error_and_keeps_the_earlier_artifact",
            "tests/test_faults.py::test_full_or_readonly_disk_is_a_clear_error_and_keeps_earlier_artifacts",
        ],
    ),
    (
        "R19b a read-only folder refuses even a valid artifact",
        "tmlib/core/runs.py",
        "            if art.check() is None:  # nothing to write: a valid artifact on a read-only disk still loads",
        "            if False:",
        ["tests/test_faults.py::test_a_really_read_only_run_folder_loads_valid_artifacts_and_names_the_fix"],
    ),
    (
        "R20 the previous artifact not restored after a cut write",
        "tmlib/core/runs.py",
        "                os.replace(old, path)  # the previous version goes back where it was",
        "                pass",
        [
            "tests/test_faults.py::test_kill_during_artifact_write_is_detected_and_rebuilt",
            "tests/test_faults.py::test_a_swap_whose_second_rename_fails_puts_the_previous_version_back",
        ],
    ),
    (
        "R21 Ctrl-C exits 1 instead of 130",
        "tmlib/cli.py",
        """        print(stop.line, file=sys.stderr, flush=True)\n        return 130""",
        """        print(stop.line, file=sys.stderr, flush=True)\n        return 1""",
        ["tests/test_interrupt.py::test_ctrl_c_prints_one_line_and_the_same_command_resumes"],
    ),
    (
        "R21b Ctrl-C's one line not printed",
        "tmlib/cli.py",
        """        print(stop.line, file=sys.stderr, flush=True)\n        return 130""",
        """        return 130""",
        ["tests/test_interrupt.py::test_ctrl_c_prints_one_line_and_the_same_command_resumes"],
    ),
    (
        "R22 explicit bf16 on a slow CPU without the warning",
        "tmlib/core/precision.py",
        """        if found.mixed_precision != "bf16":""",
        """        if False:""",
        ["tests/test_precision.py::test_explicit_bf16_on_a_slow_cpu_warns_with_the_slowdown_and_the_fix"],
    ),
    (
        "R23 a download used without its SHA-256",
        "tmlib/core/assets.py",
        "        if digest != asset.sha256:",
        "        if False:",
        ["tests/test_assets.py::test_corrupt_download_is_refetched_or_refused"],
    ),
    (
        "R24 the tests' network guard removed",
        "tests/conftest.py",
        "            raise NetworkBlocked(",
        "            return real(self, address)\n            raise NetworkBlocked(",
        ["tests/test_offline.py::test_a_connection_off_this_machine_fails_loudly"],
    ),
]


def run(variants, worktree: Path) -> list[dict]:
    out = []
    for name, file, old, new, tests in variants:
        path = worktree / file
        src = path.read_text()
        if src.count(old) != 1:
            raise SystemExit(f"{name}: the edit's text occurs {src.count(old)} times in {file}; update the variant")
        path.write_text(src.replace(old, new))
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
            cwd=worktree,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(worktree)},
            timeout=900,
        )
        path.write_text(src)
        failed = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
        row = {
            "variant": name,
            "file": file,
            "verdict": "caught" if proc.returncode != 0 else "MISSED",
            "failed_test": failed[0] if failed else "",
            "tests": " ".join(tests),
            "seconds": round(time.time() - start, 1),
        }
        print(f"{row['variant']}: {row['verdict']} {row['failed_test']}", flush=True)
        out.append(row)
    return out


def main(argv: list[str]) -> int:
    chosen = [v for v in VARIANTS if not argv or v[0].split()[0] in argv]
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "variants"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(worktree), "HEAD"], cwd=ROOT, check=True)
        try:
            rows = run(chosen, worktree)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
    target = ROOT / "benchmarks" / "results" / "broken_variants.csv"
    if not argv:
        with open(target, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {target}")
    missed = [r["variant"] for r in rows if r["verdict"] != "caught"]
    print(f"{len(rows) - len(missed)} of {len(rows)} variants caught" + (f"; missed: {missed}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
