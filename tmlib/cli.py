"""Command line: ``python -m tmlib <verb>``.

python -m tmlib assets fetch [--force]     download, verify and unpack the offline assets
python -m tmlib assets verify              re-hash the unpacked assets
python -m tmlib assets list                what each asset is and where it lives
python -m tmlib suite --params default --out runs/default [--only 01 03] [-p 03.seeds='[0, 1]']
                                           run the notebooks with papermill
python -m tmlib params list                the parameter sets of every notebook
python -m tmlib params show 03 default     one notebook's parameters (type, value, help)
python -m tmlib params doc --out docs/parameters.md   every parameter and set, as markdown
python -m tmlib worker --params default    share notebook 01's stages with a running suite
python -m tmlib finetune --task mr --model minilm --out runs/ft_mr [--epochs 3 --lr 2e-5 ...]
                                           fine-tune a classifier; runs unchanged under
                                           `accelerate launch -m tmlib finetune ...` (multi-GPU)
python -m tmlib mlm --corpus bbc --model scratch:mini --out runs/genept --max-steps 1000
python -m tmlib mlm --labelled runs/default/01_selective_masking/corpus_labels/data
                    --masking selective --model runs/genept/model --out runs/taskpt_sel --max-steps 500
                                           GenePT / TaskPT MLM training (random 15%, selective,
                                           or the random-count control); accelerate-launchable
python -m tmlib adapt --task csv:reviews.csv --method mask --out runs/mine
                                           notebook 03's recipe on your file: train, test on the
                                           held-out rows, export (a mask as its 1-bit file)
python -m tmlib predict --mask mr=runs/mine/solutions/<task>/mask-s0/mask.safetensors
                    --mask news=... --input new.csv --out predictions.csv
                                           several tasks' masks on one backbone
python -m tmlib importance --task csv:reviews.csv --corpus txt:reviews.txt --out runs/imp
                                           scorer, buffer labels, tagger, labelled corpus (for mlm)
python -m tmlib landscape --a runs/mine/solutions/<task>/mask-s0 --b .../finetune-s0 --task csv:reviews.csv
                    --out path.csv     the straight line between two solutions
python -m tmlib compare runs/default/03_masking_vs_finetuning runs/fp32/03_masking_vs_finetuning
                    --names bf16 fp32 --out runs/fp32/precision_check.csv
                                           two runs differing in one setting, paired by seed
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tmlib.core import assets
from tmlib.core.precision import MIXED_PRECISIONS
from tmlib.suite import DEFAULT_JOBS


def _assets(args) -> int:
    if args.action == "fetch":
        for name in args.names or list(assets.ASSETS):
            path = assets.fetch(name, force=args.force)
            print(f"{name:10s} ok  {path}")
    elif args.action == "verify":
        bad = [n for n in (args.names or list(assets.ASSETS)) if not assets.verify(n)]
        for n in args.names or list(assets.ASSETS):
            print(f"{n:10s} {'CORRUPT/MISSING' if n in bad else 'ok'}")
        if bad:
            print("fix: python -m tmlib assets fetch --force " + " ".join(bad), file=sys.stderr)
            return 1
    else:
        for name, a in assets.ASSETS.items():
            print(f"{name:10s} {a.package}=={a.version:8s} {a.description}\n{'':10s} {assets.cache_dir() / name}")
    return 0


def _here(value):
    """A ``csv:`` / ``jsonl:`` / ``txt:`` file named relative to where the command runs, as an absolute path (the
    notebooks run in the project folder); other values unchanged."""
    if isinstance(value, list):
        return [_here(v) for v in value]
    if isinstance(value, str) and value.startswith(("csv:", "jsonl:", "txt:")):
        kind, path = value.split(":", 1)
        if not Path(path).is_absolute() and Path(path).exists():
            return f"{kind}:{Path(path).resolve()}"
    return value


def _suite(args) -> int:
    from tmlib.core.config import parse_yaml
    from tmlib.suite import run_suite

    extra = {}
    for item in args.parameter:
        if len(item) == 1 and "=" in item[0]:
            item = item[0].split("=", 1)
        if len(item) != 2:
            raise ValueError(f"-p {' '.join(item)}: give NAME VALUE or NAME=VALUE (NN.NAME for one notebook)")
        extra[item[0]] = _here(parse_yaml(item[1]))
    run_suite(
        args.params,
        args.out,
        only=args.only,
        kernel=args.kernel,
        jobs=args.jobs,
        notebooks_dir=args.notebooks,
        params_dir=args.params_dir,
        extra=extra,
        calibrate=not args.no_calibration,
    )
    return 0


def _params(args) -> int:
    """The parameter sets (list) or one notebook's parameters with their defaults and help (show)."""
    from tmlib.core.config import load_yaml
    from tmlib.suite import PARAMS, notebook_parameters, notebooks

    nbs = notebooks(args.notebooks)
    if args.action == "doc":
        from tmlib.suite import parameters_document

        text = parameters_document(nbs, Path(args.params_dir or PARAMS))
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"wrote {args.out}")
        else:
            print(text)
        return 0
    if args.action == "list":
        for nb in nbs:
            print(nb.stem)
            for f in sorted((Path(args.params_dir or PARAMS) / nb.stem).glob("*.yaml")):
                first = next((ln.lstrip("# ").strip() for ln in f.read_text().splitlines() if ln.startswith("#")), "")
                print(f"  {f.stem:<18} {first[:100]}")
        return 0
    chosen = [nb for nb in nbs if args.notebook and nb.stem.startswith(args.notebook)]
    if len(chosen) != 1:
        raise ValueError(f"params show NN: name one notebook ({', '.join(nb.stem for nb in nbs)})")
    import papermill as pm

    values = load_yaml(Path(args.params_dir or PARAMS) / chosen[0].stem / f"{args.set}.yaml") if args.set else {}
    info = pm.inspect_notebook(str(chosen[0]))
    for name in notebook_parameters(chosen[0]):
        p = info[name]
        value = f"{values[name]!r} (set {args.set})" if name in values else p["default"]
        print(f"{name} ({p['inferred_type_name']}) = {value}  # {p['help']}")
    return 0


def _worker(args) -> int:
    """A second process for a notebook-01 run folder: the same stages, built in reverse order."""
    import os

    from tmlib.core.config import from_flat, load_yaml
    from tmlib.experiments.selective import Experiment, SelectiveConfig
    from tmlib.suite import PARAMS

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # beside a notebook: no spinning on its core (as the suite)
    values = load_yaml(PARAMS / "01_selective_masking" / f"{args.params}.yaml")
    values["out_dir"] = str(Path(args.out or f"runs/{args.params}") / "01_selective_masking")
    if args.threads is not None:
        values["threads"] = args.threads
    exp = Experiment(from_flat(SelectiveConfig, values))
    # one line per stage this process builds, printed holding the stage's lock (before its build starts): whoever
    # watches the worker knows which stages are its own and that no other process builds them
    exp.store.on_build = lambda name: print(f"[tmlib worker] building {name} (pid {os.getpid()})", flush=True)
    n = len(exp.run(reverse=not args.forward))
    print(f"[tmlib worker] {n} fine-tuning runs built or loaded", flush=True)
    return 0


def _finetune(args) -> int:
    from dataclasses import fields

    from tmlib.core.config import from_dict
    from tmlib.core.models import load_classifier, load_tokenizer
    from tmlib.core.precision import get_accelerator
    from tmlib.core.runs import RunStore
    from tmlib.core.training import TrainConfig, fit
    from tmlib.tasks.classify import Classification
    from tmlib.tasks.data import label_names, load_task

    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    cfg = from_dict(TrainConfig, overrides)
    data = load_task(
        args.task,
        seed=args.data_seed,
        max_examples=args.max_examples,
        text_column=args.text_column,
        label_column=args.label_column,
        pair_column=args.pair_column,
        aspect_column=args.aspect_column,
        **({"encoding": args.encoding} if args.task.startswith(("csv:", "jsonl:")) else {}),
    )
    model = load_classifier(args.model, label_names(data), seed=cfg.seed)
    tok = load_tokenizer(args.model)
    store = RunStore(args.out)
    res = fit(model, data, cfg, Classification(tok), checkpoint_dir=store.root / "checkpoint")
    acc = get_accelerator()
    if acc.is_main_process:
        acc.unwrap_model(model).save_pretrained(store.root / "model")
        tok.save_pretrained(store.root / "model")
        store.write_json(
            "results.json",
            {
                "task": args.task,
                "model": args.model,
                "config": cfg,
                "dev": res.dev,
                "test": res.test,
                "history": res.fit.history,
                "seconds": res.fit.seconds,
                "processes": acc.num_processes,
                "device": str(acc.device),
            },
        )
        print(
            f"dev accuracy {res.dev['accuracy']:.4f}  test accuracy {res.test['accuracy']:.4f}  "
            f"({res.fit.steps} steps, {res.fit.seconds:.0f} s, {acc.num_processes} process(es) on {acc.device})"
        )
    return 0


ADAPT_SKIP = {"out_dir", "progress", "memory_max_tasks", "lr", "lr_grid", "schedule"}
"""Notebook 03's parameters that ``adapt`` does not take as such: its own ``--out``, and the per-method dicts that
``--lr``, ``--lr-grid`` and ``--schedule`` give for the one method."""
ADAPT_SINGLE = {"tasks": "task", "methods": "method", "max_lengths": "max_length", "max_train": "max_train"}
"""Notebook 03's per-task lists that ``adapt`` takes once (one task, one method)."""


def _adapt_options(parser) -> None:
    """Every option of ``adapt`` but ``--out``, ``--lr``, ``--lr-grid`` and ``--schedule``: notebook 03's parameters
    (:class:`~tmlib.experiments.masking.MaskingConfig`), their defaults and help, by construction."""
    from tmlib.core.precision import KERNELS
    from tmlib.experiments.masking import MaskingConfig
    from tmlib.options import add_options

    add_options(
        parser,
        MaskingConfig,
        skip=ADAPT_SKIP,
        single=ADAPT_SINGLE,
        choices={
            "mixed_precision": MIXED_PRECISIONS,
            "eval_mixed_precision": MIXED_PRECISIONS,
            "kernels": KERNELS,
            "test_pool": ("heldout", "split"),
        },
    )


def _adapt_config(args):
    """``adapt``'s options -> notebook 03's config for one task and one method (its lr rules: :func:`_lr_grid`)."""
    from tmlib.core.config import ConfigError, from_flat
    from tmlib.experiments.masking import MaskingConfig
    from tmlib.options import cli_message, flat_values

    flat = {**flat_values(args, MaskingConfig, ADAPT_SKIP, ADAPT_SINGLE), "out_dir": args.out, "progress": True}
    lrs = _lr_grid(args)
    if args.lr is not None:
        flat.update(lr={args.method: {args.task: args.lr}}, lr_grid={})
    elif lrs is not None:
        flat.update(lr={}, lr_grid={args.method: list(lrs)} if lrs else {})
    if args.schedule:
        flat["schedule"] = {args.method: args.schedule}
    try:
        return from_flat(MaskingConfig, flat)
    except ConfigError as exc:
        raise ConfigError(cli_message(str(exc), MaskingConfig, ADAPT_SINGLE)) from None


def _adapt(args) -> int:
    """The masking paper's comparison on one task: notebook 03's experiment for one method, tested on the
    held-out pool; ``results.csv`` is notebook 03's table."""
    from tmlib.experiments.masking import Experiment, results_table

    exp = Experiment(_adapt_config(args))
    rows = []
    for recipe in exp.plan.solutions:
        trained, ev, row = exp.tested(recipe)
        rows.append(row)
        print(
            f"{recipe.method} seed {recipe.seed}: lr {row['lr']:g}  dev {row['dev_accuracy']:.4f}  test "
            f"{ev.accuracy:.4f} ({ev.n} held-out examples)  {row['task_bytes']:,} bytes per task",
            flush=True,
        )
    exp.store.write_csv("results.csv", results_table(rows))
    return 0


def _export(args) -> int:
    from tmlib.export import ExportError, export_solution

    try:
        out = export_solution(args.solution, args.out)
    except ExportError as exc:
        raise ValueError(str(exc)) from None
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}; how to load it: {out / 'README.md'}")
    return 0


def _lr_grid(args) -> tuple[float, ...] | None:
    """The lrs ``--lr-grid`` names: None when it is not given (notebook 03's grid and lrs apply), () for ``none``
    (the method's default lr)."""
    if not args.lr_grid:
        return None
    if args.lr_grid == ["none"]:
        return ()
    try:
        lrs = tuple(float(v) for v in args.lr_grid)
    except ValueError:
        raise ValueError(f"--lr-grid {' '.join(args.lr_grid)}: give learning rates (e.g. 1e-4 3e-4) or none") from None
    if any(v <= 0 for v in lrs) or len(set(lrs)) != len(lrs):
        raise ValueError(f"--lr-grid {' '.join(args.lr_grid)}: learning rates must be > 0 and different")
    return lrs


def _predict(args) -> int:
    """Several tasks' 1-bit masks on ONE backbone: every row of a file predicted under every task."""
    import pandas as pd

    from tmlib.core.models import load_classifier, load_tokenizer
    from tmlib.masking.multitask import MultiTaskMaskedModel
    from tmlib.tasks.data import load_text_file

    masks = {}
    for item in args.mask:
        task, eq, path = item.partition("=")
        if not eq or not task or not path:
            raise ValueError(
                f"--mask {item!r}: give TASK=PATH (a mask.safetensors that `tmlib adapt --method mask` "
                f"saved, e.g. mr=runs/mine/solutions/mr/mask-s0/mask.safetensors)"
            )
        if not Path(path).is_file():
            raise ValueError(f"--mask {task}: {path} does not exist")
        masks[task] = path
    texts = list(
        load_text_file(
            args.input, text_column=args.text_column, label_column=None, split=False, encoding=args.encoding
        )["text"]
    )
    mt = MultiTaskMaskedModel(
        load_classifier(args.model, ["a", "b"], seed=args.seed), load_tokenizer(args.model), backbone_name=args.model
    )
    out = pd.DataFrame({"text": texts})
    for task, path in masks.items():
        mt.add_task(task, path)
        out[task] = mt.predict(task, texts, max_length=args.max_length)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(args.out, index=False)
    mem = mt.memory_bytes()
    print(f"wrote {args.out}: {len(texts)} texts x {len(masks)} task(s) on one backbone ({mem['total']:,} bytes held)")
    return 0


def _importance(args) -> int:
    """Notebook 01's importance pipeline on your data: scorer -> buffer labels -> tagger -> labelled corpus."""
    from tmlib.core.config import from_flat
    from tmlib.core.precision import processes
    from tmlib.experiments.selective import Experiment, SelectiveConfig, corpus_summary

    flat = {
        "out_dir": args.out,
        "task": args.task,
        "taskpt_corpus": args.corpus,
        "text_column": args.text_column,
        "label_column": args.label_column,
        "encoding": args.encoding,
        "scorer_model": args.model,
        "tagger_model": args.model,
        "genept_model": args.model,
        "task_max_examples": args.max_examples,
        "taskpt_max_sentences": args.max_sentences,
        "buffer_max_sentences": args.buffer_sentences,
        "tagger_threshold": args.threshold,
        "mixed_precision": args.mixed_precision,
    }
    exp = Experiment(from_flat(SelectiveConfig, flat))
    # under `accelerate launch` / `torchrun` every process runs this and labels a share of the corpus; the scorer,
    # buffer labels and tagger (small: the buffer's few hundred sentences) come from a one-process run before
    launch = processes()
    if launch.num_processes > 1 and not exp.store.has(exp.tagger_stage()):
        if launch.is_main_process:
            print(
                f"error: no tagger in {args.out}: under a multi-process launch `tmlib importance` shards only the "
                "corpus labelling; train the scorer, buffer labels and tagger first with one process: the same "
                "command without the launcher, plus --until tagger",
                file=sys.stderr,
            )
        return 2
    tagger = exp.get(exp.tagger_stage())
    if args.until == "tagger":
        print(
            f"tagger: {exp.store.folder('tagger')} (label the corpus: the same command without --until, e.g. "
            "under accelerate launch)"
        )
        return 0
    if launch.num_processes > 1:
        launch.wait_for_everyone()
        if not exp.store.has(exp.corpus_stage()):
            if launch.is_main_process:
                exp.get(exp.corpus_stage(processes=launch))  # the same key and code as the one-process stage
            else:
                exp.label_corpus(tagger, launch)
        launch.wait_for_everyone()
        if not launch.is_main_process:
            return 0
    corpus = exp.get(exp.corpus_stage())
    summary = corpus_summary(corpus)
    exp.store.write_csv("importance_summary.csv", summary)
    print(summary.to_string(index=False))
    print(
        f"labelled corpus: {exp.store.folder('corpus_labels') / 'data'} (python -m tmlib mlm --labelled <it> "
        f"--masking selective ...)"
    )
    return 0


def _landscape(args) -> int:
    """Loss and accuracy along the straight line between two saved classifiers (two solutions of one task)."""
    from transformers import AutoModelForSequenceClassification

    from tmlib.core.models import load_tokenizer
    from tmlib.masking.landscape import linear_path, path_summary
    from tmlib.tasks.classify import EvalBatches, encode
    from tmlib.tasks.data import TaskRecipe

    models = []
    for which in (args.a, args.b):
        folder = Path(which) / "model" if (Path(which) / "model" / "config.json").is_file() else Path(which)
        if not (folder / "config.json").is_file():
            raise ValueError(
                f"{which} is not a saved classifier (no config.json in it or in its model/ folder); "
                "give a solution folder that `tmlib adapt` wrote, e.g. runs/mine/solutions/<task>/mask-s0"
            )
        models.append(AutoModelForSequenceClassification.from_pretrained(folder).eval())
    data = TaskRecipe(
        args.task,
        max_test=args.max_test,
        test_pool="split",
        text_column=args.text_column,
        label_column=args.label_column,
        encoding=args.encoding,
    ).load()
    tok = load_tokenizer(args.tokenizer)
    batches = {s: EvalBatches(encode(data[s], tok, args.max_length), tok) for s in ("dev", "test")}
    step = (args.gamma_max - args.gamma_min) / (args.points - 1)
    gammas = [round(args.gamma_min + i * step, 6) for i in range(args.points)]
    if not any(abs(g) < 1e-9 for g in gammas) or not any(abs(g - 1) < 1e-9 for g in gammas):
        gammas = sorted(set(gammas) | {0.0, 1.0})
    path = linear_path(models[0], models[0], models[1], batches, gammas, desc="interpolate")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    path.to_csv(args.out, index=False)
    s = path_summary(path, split="test")
    print(
        f"wrote {args.out}: test accuracy {s['accuracy_at_0']:.4f} -> {s['accuracy_at_1']:.4f}, largest drop below "
        f"the lower end {100 * s['max_drop']:.2f} points (at gamma {s['argmin_gamma']:g})"
    )
    return 0


def _report(args) -> int:
    import json

    from tmlib.core.config import project_path
    from tmlib.report import SETS, key_numbers, results_document, save_tables, update_readme, write_figures

    if args.save_tables:
        written = save_tables(args.run, args.save_tables)
        print(f"copied {len(written)} table(s) of {args.run} to {args.save_tables}: commit them")
        if not args.out:
            return 0
    sets = None if args.no_sets else (args.sets or project_path(SETS))
    text = results_document(args.run, sets)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
        for fig in write_figures(args.run, Path(args.out).parent, sets):
            print(f"wrote {fig}")
        numbers = key_numbers(args.run)
        Path(args.out).with_suffix(".json").write_text(json.dumps(numbers, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")
        if args.readme:
            update_readme(args.readme, numbers)
            print(f"updated the results section of {args.readme}")
    else:
        print(text)
    return 0


def _mlm(args) -> int:
    from dataclasses import fields

    from tmlib.core.config import from_dict
    from tmlib.core.models import load_mlm, load_tokenizer
    from tmlib.core.precision import get_accelerator
    from tmlib.core.training import TrainConfig, fit
    from tmlib.experiments.selective import collator as _collator
    from tmlib.selective.mlm import MaskedLM, pack_corpus
    from tmlib.tasks.data import load_corpus

    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    cfg = from_dict(TrainConfig, {"lr": 1e-3, "batch_size": 32, "warmup_ratio": 0.05, "select_metric": "", **overrides})
    tok = load_tokenizer(args.model if not args.model.startswith("scratch:") else "minilm")
    if args.labelled:
        from pathlib import Path

        from datasets import Dataset

        d = Path(args.labelled)
        if not (d / "dataset_info.json").is_file():
            raise ValueError(
                f"{d} is not a labelled corpus (a datasets folder written by tmlib.selective.tagger."
                f"label_corpus, e.g. runs/<set>/01_selective_masking/corpus_labels/data)"
            )
        ds = Dataset.load_from_disk(str(d))
        packed = pack_corpus(
            None,
            tok,
            cfg.max_length,
            token_ids=list(ds["token_ids"]),
            token_fields={"importance": list(ds["importance"]), "important": list(ds["important"])},
        )
    else:
        if args.masking != "random15":
            raise ValueError(
                f"--masking {args.masking} needs per-token importance: pass --labelled <labelled corpus dir>"
            )
        packed = pack_corpus(load_corpus(args.corpus, max_sentences=args.max_sentences)["text"], tok, cfg.max_length)
    model = load_mlm(args.model, seed=cfg.seed)
    acc = get_accelerator()
    from pathlib import Path

    out = Path(args.out)
    res = fit(
        model,
        packed,
        cfg,
        MaskedLM(tok, collator=_collator(args.masking, tok, seed=cfg.seed, fallback=args.fallback)),
        checkpoint_dir=out / "checkpoint",
        desc=f"MLM ({args.masking})",
    )
    if acc.is_main_process:
        from tmlib.core.runs import atomic_save, atomic_write_json

        def write(tmp):
            acc.unwrap_model(model).save_pretrained(tmp)
            tok.save_pretrained(tmp)

        atomic_save(out / "model", write)
        atomic_write_json(
            out / "results.json",
            {
                "model": args.model,
                "masking": args.masking,
                "config": cfg,
                "history": res.history,
                "steps": res.steps,
                "seconds": res.seconds,
                "processes": acc.num_processes,
                "device": str(acc.device),
            },
        )
        print(
            f"MLM {args.masking}: {res.steps} steps in {res.seconds:.0f} s on {acc.num_processes} process(es) "
            f"({acc.device}); model in {out / 'model'}"
        )
    return 0


def _compare(args) -> int:
    """Two runs of one notebook-03-style experiment that differ in one setting, paired by seed."""
    import pandas as pd

    from tmlib.core.stats import compare_arms

    arms = {}
    for name, run in zip(args.names, args.runs):
        f = Path(run) / "results.csv"
        if not f.is_file():
            raise ValueError(
                f"{f} not found: run the experiment first (python -m tmlib suite --params <set> --only 03)"
            )
        df = pd.read_csv(f)
        if args.query:
            try:
                df = df.query(args.query)
            except Exception as exc:  # pandas raises many types for a bad expression
                raise ValueError(f"--query {args.query!r} does not apply to {f}: {exc}") from None
        arms[name] = df
    table = compare_arms(arms, by=args.by, value_col=args.metric)
    for _, r in table.iterrows():
        print(" ".join(str(r[c]) for c in args.by) + ": " + r["sentence"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.round(4).to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


def _precision(parser) -> None:
    """--mixed-precision and --kernels of a training verb (TrainConfig fields; default: TrainConfig's)."""
    parser.add_argument(
        "--mixed-precision",
        dest="mixed_precision",
        default=None,
        choices=MIXED_PRECISIONS,
        help="arithmetic of training: auto (bf16 where the hardware runs it natively, else fp32), "
        "bf16, fp32 (= no) or fp16 (CUDA); default fp32",
    )
    parser.add_argument(
        "--kernels",
        default=None,
        choices=["fast", "hf"],
        help="fast: eager attention on CPU + [CLS]-only last layer; hf: the model's own forward",
    )


def _data_columns(parser) -> None:
    """The options that name a user's file: its columns and its encoding."""
    parser.add_argument("--text-column", default="text", help="the file's text column (default text)")
    parser.add_argument("--label-column", default="label", help="the file's label column (default label)")
    parser.add_argument("--pair-column", default=None, help="a second text (sentence pairs), if any")
    parser.add_argument("--aspect-column", default=None, help="an aspect (aspect-level sentiment), if any")
    parser.add_argument("--encoding", default="utf-8", help="the file's text encoding (default utf-8; e.g. latin-1)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tmlib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    pa = sub.add_parser("assets", help="offline assets (registry packages)")
    pa.add_argument("action", choices=["fetch", "verify", "list"])
    pa.add_argument("names", nargs="*", help=f"subset of {', '.join(assets.ASSETS)}")
    pa.add_argument("--force", action="store_true", help="download and unpack again")
    pa.set_defaults(func=_assets)
    ps = sub.add_parser("suite", help="execute the notebooks with a papermill parameter set")
    ps.add_argument(
        "--params",
        default="default",
        help="parameter set name (<params-dir>/<notebook>/<name>.yaml), or one YAML file for every notebook",
    )
    ps.add_argument(
        "--notebooks", default=None, help="folder of the NN_name.ipynb notebooks (default: the repository's)"
    )
    ps.add_argument(
        "--params-dir",
        default=None,
        help="folder of the per-notebook parameter folders (default: the repository's papermill_params)",
    )
    ps.add_argument("--out", default=None, help="output directory (default runs/<params>)")
    ps.add_argument(
        "-p",
        "--parameter",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME VALUE",
        help="override a parameter, the value read as YAML: -p seeds '[0, 1]' (every notebook that has "
        "it) or -p 03.seeds='[0, 1]' (notebook 03 only); an unknown name is an error",
    )
    ps.add_argument("--only", nargs="*", default=None, help="notebook name prefixes to run, e.g. 01 03")
    ps.add_argument("--kernel", default=None, help="Jupyter kernel name (default: this Python)")
    ps.add_argument(
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        help=f"notebooks run at once, each in its own process (default {DEFAULT_JOBS}; "
        "1: one after another); a notebook that reads another's output waits for it",
    )
    ps.add_argument(
        "--no-calibration",
        action="store_true",
        help="skip the fixed MiniLM training step timed before the notebooks (recorded beside their "
        "wall times, to compare runs on hosts of different speed)",
    )
    ps.set_defaults(func=_suite)
    pp = sub.add_parser("params", help="parameter sets of each notebook (list), one notebook's parameters (show)")
    pp.add_argument("action", choices=["list", "show", "doc"])
    pp.add_argument("notebook", nargs="?", default=None, help="show: the notebook's number, e.g. 03")
    pp.add_argument("set", nargs="?", default=None, help="show: also the values of this parameter set")
    pp.add_argument("--notebooks", default=None, help="folder of the notebooks (default: the repository's)")
    pp.add_argument("--params-dir", default=None, help="folder of the parameter folders (default: the repository's)")
    pp.add_argument("--out", default=None, help="doc: write the markdown here (e.g. docs/parameters.md)")
    pp.set_defaults(func=_params)
    pw = sub.add_parser("worker", help="share notebook 01's stages with a running notebook (file locks; reverse order)")
    pw.add_argument("--params", default="default", help="notebook 01 parameter set")
    pw.add_argument("--out", default=None, help="the suite's output directory (default runs/<params>)")
    pw.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of this worker (default: the parameter set's, as the notebook runs; another "
        "count changes the numbers of the stages this worker builds)",
    )
    pw.add_argument("--forward", action="store_true", help="same order as the notebook (default: reverse)")
    pw.set_defaults(func=_worker)
    pf = sub.add_parser("finetune", help="fine-tune a sequence classifier (accelerate-launchable)")
    pf.add_argument("--task", default="mr", help="builtin task, csv:<path>, jsonl:<path> or hub:<name>")
    pf.add_argument("--model", default="minilm", help="minilm, scratch:<size>, a checkpoint dir or a hub name")
    pf.add_argument("--out", required=True, help="run directory (model, results.json)")
    pf.add_argument("--data-seed", type=int, default=0)
    pf.add_argument("--max-examples", type=int, default=None, help="cap each split (quick runs)")
    _data_columns(pf)
    for name, typ in [
        ("lr", float),
        ("batch_size", int),
        ("epochs", float),
        ("max_steps", int),
        ("max_length", int),
        ("seed", int),
        ("eval_every", int),
        ("checkpoint_every", int),
    ]:
        pf.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=None)
    pf.add_argument(
        "--group-by-length",
        dest="group_by_length",
        action="store_true",
        default=None,
        help="batches of similar length (a seeded order; resumes exactly)",
    )
    _precision(pf)
    pf.set_defaults(func=_finetune)
    pad = sub.add_parser(
        "adapt",
        help="adapt a backbone to a task with finetune, bitfit, mask or lora (notebook 03's "
        "recipe on your data); tested on every example train and dev leave out",
    )
    pad.add_argument("--out", required=True, help="run directory (solutions/, evaluations/, results.csv)")
    pad.add_argument(
        "--lr", type=float, default=None, help="learning rate, used as given (default: notebook 03's rule, below)"
    )
    pad.add_argument(
        "--lr-grid",
        nargs="+",
        default=None,
        metavar="LR",
        help="lrs tried on dev with the first seed; the best dev accuracy wins and every seed trains at it; none: "
        "the method's default lr (default: notebook 03's rule: its dev-chosen lr for the builtin tasks it ran, "
        "else its grid for the method)",
    )
    pad.add_argument("--schedule", default=None, help="a named lr schedule for the method (default: the method's)")
    _adapt_options(pad)
    pad.set_defaults(func=_adapt)
    pex = sub.add_parser(
        "export",
        help="a trained solution as a folder plain transformers / peft load, with a model card generated from the run",
    )
    pex.add_argument("solution", help="a solution folder: <run>/solutions/<task>/<method>-s<seed> (adapt, notebook 03)")
    pex.add_argument("--out", required=True, help="a new folder for the export (never overwritten)")
    pex.set_defaults(func=_export)
    ppr = sub.add_parser("predict", help="several tasks' masks on one backbone: predictions for every row of a file")
    ppr.add_argument(
        "--mask",
        action="append",
        required=True,
        metavar="TASK=PATH",
        help="a task's mask.safetensors (from `adapt --method mask`); repeat for more tasks",
    )
    ppr.add_argument("--input", required=True, help="CSV or JSON Lines file with a text column")
    ppr.add_argument("--out", required=True, help="CSV written: the text and one column of predictions per task")
    ppr.add_argument("--model", default="minilm", help="the backbone the masks were trained on")
    ppr.add_argument("--max-length", type=int, default=128)
    ppr.add_argument(
        "--seed",
        type=int,
        default=0,
        help="a scratch:<size> backbone's init seed (the masks' training seed); a pretrained backbone ignores it",
    )
    ppr.add_argument("--text-column", default="text", help="the file's text column (default text)")
    ppr.add_argument("--encoding", default="utf-8", help="the file's text encoding (default utf-8)")
    ppr.set_defaults(func=_predict)
    pim = sub.add_parser(
        "importance",
        help="notebook 01's importance pipeline on your data: scorer, buffer labels, tagger, labelled corpus",
    )
    pim.add_argument("--task", required=True, help="labelled data: csv:<path>, jsonl:<path>, a builtin or hub:<name>")
    pim.add_argument(
        "--corpus",
        required=True,
        help="unlabelled in-domain text: txt:<path> (one text per line), csv:<path>, a builtin corpus or hub:<name>",
    )
    pim.add_argument("--out", required=True, help="run folder (its stages are cached there)")
    pim.add_argument("--model", default="minilm", help="scorer and tagger backbone")
    pim.add_argument("--max-examples", type=int, default=400, help="labelled examples per split (0: all)")
    pim.add_argument("--max-sentences", type=int, default=8000, help="corpus sentences labelled (0: all)")
    pim.add_argument("--buffer-sentences", type=int, default=400, help="train sentences given buffer labels (0: all)")
    pim.add_argument(
        "--threshold",
        default="argmax",
        choices=["argmax", "dev_f1"],
        help="tagger decision: argmax (official) or the best dev-F1 threshold",
    )
    pim.add_argument(
        "--mixed-precision",
        default="auto",
        choices=MIXED_PRECISIONS,
        help="auto (bf16 where native, else fp32) | bf16 | fp32 (= no) | fp16",
    )
    pim.add_argument(
        "--until",
        choices=["tagger"],
        help="stop after the tagger (then label a large corpus with the "
        "same command under accelerate launch: each process "
        "labels a share)",
    )
    _data_columns(pim)
    pim.set_defaults(func=_importance)
    pla = sub.add_parser("landscape", help="loss and accuracy along the straight line between two saved solutions")
    pla.add_argument("--a", required=True, help="a solution folder (e.g. runs/mine/solutions/<task>/mask-s0)")
    pla.add_argument("--b", required=True, help="another solution of the same task and backbone")
    pla.add_argument("--task", required=True, help="the task both were trained on (its dev and test splits)")
    pla.add_argument("--out", required=True, help="CSV written: gamma, split, loss, accuracy")
    pla.add_argument("--tokenizer", default="minilm", help="the backbone's tokenizer (minilm, a folder or a hub name)")
    pla.add_argument("--points", type=int, default=15, help="points from --gamma-min to --gamma-max (0 and 1 added)")
    pla.add_argument("--gamma-min", type=float, default=-0.2)
    pla.add_argument("--gamma-max", type=float, default=1.2)
    pla.add_argument("--max-length", type=int, default=64)
    pla.add_argument("--max-test", type=int, default=1000, help="test examples per point (0: all)")
    _data_columns(pla)
    pla.set_defaults(func=_landscape)
    prp = sub.add_parser("report", help="the results document of a run folder, generated from its CSV/JSON files")
    prp.add_argument("run", help="a suite output folder, e.g. runs/default")
    prp.add_argument(
        "--out",
        default=None,
        help="write it here (e.g. docs/results.md; the key numbers as .json beside it) instead of printing it",
    )
    prp.add_argument("--readme", default=None, help="also fill this README's results section from the key numbers")
    prp.add_argument(
        "--save-tables",
        default=None,
        metavar="DIR",
        help="copy the run's tables (each notebook's CSV/JSON) to DIR to commit them, e.g. "
        "benchmarks/results/sets/full: later documents show them as that set's",
    )
    prp.add_argument(
        "--sets",
        default=None,
        metavar="DIR",
        help="committed sets to show after the run's own sections (default: benchmarks/results/sets of the project)",
    )
    prp.add_argument("--no-sets", action="store_true", help="the run's own sections only")
    prp.set_defaults(func=_report)
    pm = sub.add_parser("mlm", help="GenePT / TaskPT masked-LM training (accelerate-launchable)")
    pm.add_argument("--corpus", default="bbc", help="builtin corpus (bbc, pang_lee, amazon) or txt:<path>")
    pm.add_argument(
        "--labelled", default=None, help="a labelled corpus dir (tagger output) for selective/random masking"
    )
    pm.add_argument(
        "--masking",
        default="random15",
        choices=["random15", "selective", "random"],
        help="random15: HF random 15%%; selective: tagger-guided; random: same count, random positions",
    )
    pm.add_argument(
        "--fallback", default="none", choices=["none", "random"], help="selective: sentences without important tokens"
    )
    pm.add_argument("--model", default="scratch:mini", help="scratch:<size>, minilm, a checkpoint dir or a hub name")
    pm.add_argument("--out", required=True, help="run directory (model/, results.json, resumable checkpoint/)")
    pm.add_argument("--max-sentences", type=int, default=None, help="cap the corpus")
    for name, typ in [
        ("lr", float),
        ("batch_size", int),
        ("epochs", float),
        ("max_steps", int),
        ("max_length", int),
        ("seed", int),
        ("checkpoint_every", int),
    ]:
        pm.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=None)
    pm.add_argument(
        "--group-by-length",
        dest="group_by_length",
        action="store_true",
        default=None,
        help="batches of similar length (a seeded order; resumes exactly)",
    )
    _precision(pm)
    pm.set_defaults(func=_mlm)
    pc = sub.add_parser("compare", help="two runs differing in one setting (e.g. bf16 vs fp32), paired by seed")
    pc.add_argument("runs", nargs=2, help="two run folders with a results.csv (notebook 03's out_dir)")
    pc.add_argument("--names", nargs=2, default=["a", "b"], help="names of the two arms (gap = first - second)")
    pc.add_argument("--by", nargs="+", default=["task", "method"], help="columns grouping the comparison")
    pc.add_argument("--metric", default="test_accuracy", help="the column compared (x100, in points)")
    pc.add_argument(
        "--query", default=None, help="keep the rows matching this pandas query, e.g. 'final' (notebook 01)"
    )
    pc.add_argument("--out", default=None, help="write the table as CSV here")
    pc.set_defaults(func=_compare)
    args = parser.parse_args(argv)
    from tmlib.suite import Interrupted

    try:
        return args.func(args)
    except (assets.AssetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as stop:  # Ctrl-C in a suite: one line, what was kept and how to resume
        print(stop.line, file=sys.stderr, flush=True)
        return 130
    except KeyboardInterrupt:  # Ctrl-C elsewhere: stages are committed atomically, so what finished is kept
        print(
            f"[tmlib] interrupted: every finished stage is kept; run the same command again to resume ({args.verb})",
            file=sys.stderr,
            flush=True,
        )
        return 130
