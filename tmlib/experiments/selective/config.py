"""Configuration of the selective-masking experiment: one dataclass per stage, nested in
:class:`SelectiveConfig`. These defaults ARE notebook 01's ``default`` parameter set (a test checks
the notebook's parameters cell and ``papermill_params/01_selective_masking/default.yaml`` against
``flatten(SelectiveConfig())``). Flat parameter names are ``<stage>_<field>`` (``genept_lr`` is
``SelectiveConfig.genept.lr``), mapped in one place: :func:`tmlib.core.config.from_flat`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TASKPT_METHODS = ("selective", "random", "random15")
SELECT_CHOICES = ("dev_loss", "last")
FALLBACKS = ("none", "random")
PACKINGS = ("documents", "sentences")
MASK_DRAWS = ("static", "dynamic")
TAGGER_THRESHOLDS = ("argmax", "dev_f1")
TAGGER_DEVS = ("buffer_tail", "task_dev")
CORPUS_STOPWORDS = ("none", "buffer")
RANKS = ("logit", "probability")
MASK_POSITIONS = ("sentence", "row")


@dataclass
class GeneptConfig:
    """General MLM pre-training: ONE run of ``max(steps)`` steps, the model saved at every budget."""

    # start: minilm (continued, all weights), scratch:<size> (from scratch), a hub name, a dir
    model: str = "minilm"
    corpus: str = "bbc"  # general-text corpus (tmlib.tasks.data.load_corpus name)
    steps: list[int] = field(default_factory=lambda: [100])  # budgets (the paper's 100k / 200k / 300k of one run)
    max_sentences: int = 0  # corpus cap (0: all)
    batch_size: int = 32  # packed rows per step
    max_length: int = 64  # tokens per packed row
    lr: float = 3e-4  # peak lr (linear warmup, linear decay)
    warmup_ratio: float = 0.05
    probe_sentences: int = 300  # held-out sentences (general and in-domain) for the MLM probe of each checkpoint
    checkpoints: list[str] = field(default_factory=list)  # instead of training: one published checkpoint per budget
    # in `steps` (e.g. MultiBERTs google/multiberts-seed_0-step_100k), same order

    def __post_init__(self):
        if not self.steps or min(self.steps) < 1:
            raise ValueError(f"genept.steps must be positive step counts, got {self.steps}")
        if self.checkpoints:
            if len(self.checkpoints) != len(self.steps) or len(set(self.steps)) != len(self.steps):
                raise ValueError(
                    f"genept.checkpoints ({len(self.checkpoints)}) needs one checkpoint per budget in "
                    f"genept.steps ({self.steps}), in the same order"
                )
            pairs = sorted(zip(self.steps, self.checkpoints))
            self.steps, self.checkpoints = [s for s, _ in pairs], [c for _, c in pairs]
        self.steps = sorted(set(self.steps))


@dataclass
class ScorerConfig:
    """The classifier the buffer method reads: ``model`` fine-tuned on the task."""

    model: str = "minilm"  # "genept" (largest GenePT checkpoint) or a model name
    lr: float = 2e-4
    epochs: float = 2.0


@dataclass
class BufferStageConfig:
    """Notebook 01's buffer stage: which sentences get buffer-method labels, and the rule's options; the rule
    itself is :class:`tmlib.selective.buffer.BufferConfig`, built from these by :meth:`rule`."""

    delta: float = 0.01  # important iff P(gold|sentence) - P(gold|buffer + token) < delta (official 0.01)
    max_sentences: int = 400  # task train sentences labelled (0: all)
    max_length: int = 128  # scoring length (official max_seq_length 128)
    first_token: str = "official"  # "official": token 0 tested and popped like any other; "keep": never tested
    stopwords: str = "spacy"  # "spacy" (official list, incl. not/no/never), "tmlib" (keeps negations), "none"
    # "spacy": texts cut into sentences (spaCy sentencizer), each scored against its text's label (official);
    # "none": whole texts. Aspect tasks are never cut (the official ASC scores each (sentence, aspect) whole).
    sentences: str = "spacy"
    rules_sentences: int = 100  # train sentences on which each non-official option's effect is measured

    def __post_init__(self):
        from tmlib.selective.buffer import SENTENCE_SPLITS

        if self.sentences not in SENTENCE_SPLITS:
            raise ValueError(f"buffer.sentences must be one of {list(SENTENCE_SPLITS)}, got {self.sentences!r}")

    def rule(self, progress: bool = True):
        """The buffer method's options (:class:`tmlib.selective.buffer.BufferConfig`) these settings name."""
        from tmlib.selective.buffer import BufferConfig

        return BufferConfig(
            delta=self.delta,
            max_length=self.max_length,
            first_token=self.first_token,
            stopwords=self.stopwords,
            progress=progress,
        )


@dataclass
class TaggerConfig:
    """Token tagger trained on the buffer labels (best epoch by dev F1), then labels the corpus."""

    model: str = "minilm"  # "genept" (largest GenePT checkpoint) or a model name
    lr: float = 1e-4
    epochs: float = 4.0
    class_weight: float = 3.0  # loss weight of "important" (REFERENCE: ~3)
    # labelling the corpus: "argmax" = important iff P(important) > 0.5 (official ModelGen); "dev_f1" = the
    # threshold on P(important) with the best dev F1 against the buffer labels
    threshold: str = "argmax"
    # dev split (epoch selection by F1): "buffer_tail" = the last 10% of the train buffer labels (official
    # merge_pkl.py) | "task_dev" = the buffer labels of the task's dev split
    dev: str = "buffer_tail"
    # labelling the corpus: "none" = the tagger's labels as they are (official sc_mask_gen.py) | "buffer" = the
    # buffer's stop list (buffer.stopwords) also zeroed there
    stopwords: str = "none"

    def __post_init__(self):
        if self.threshold not in TAGGER_THRESHOLDS:
            raise ValueError(f"tagger.threshold must be one of {list(TAGGER_THRESHOLDS)}, got {self.threshold!r}")
        if self.dev not in TAGGER_DEVS:
            raise ValueError(f"tagger.dev must be one of {list(TAGGER_DEVS)}, got {self.dev!r}")
        if self.stopwords not in CORPUS_STOPWORDS:
            raise ValueError(f"tagger.stopwords must be one of {list(CORPUS_STOPWORDS)}, got {self.stopwords!r}")


@dataclass
class TaskptConfig:
    """Task-guided MLM on the unlabelled in-domain corpus, the same budget for every method."""

    corpus: str = "pang_lee"  # unlabelled in-domain corpus
    max_sentences: int = 8000  # sentences labelled by the tagger and used (0: all)
    # checkpoints; the last is the budget. One in `default` (the curve over checkpoints and the dev-loss choice
    # between them: the `cpu` set, [50, 100])
    steps: list[int] = field(default_factory=lambda: [100])
    # TaskPT budgets, each its own run with its own schedule (warmup and decay over its steps), fine-tuned at its
    # last step, on the same GenePT and importance pipeline: the budget curve (budget_results.csv, budget_gaps.csv);
    # []: none
    budgets: list[int] = field(default_factory=list)
    # selective | random (same count) | random15
    methods: list[str] = field(default_factory=lambda: ["selective", "random"])
    # selective: sentences without an important token get no mask (official) or "random"
    fallback: str = "none"
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 64
    warmup_ratio: float = 0.2  # official run_pretraining.sh
    dev_fraction: float = 0.1  # held-out share of the labelled corpus (official: 10%)
    select: str = "dev_loss"  # checkpoint fine-tuned: lowest held-out MLM loss (official) or "last"
    # rows: "documents" = consecutive sentences of one document (official create_data.py) | "sentences" = greedy
    # packs of sentences sampled across the corpus
    packing: str = "documents"
    short_seq_prob: float = 0.1  # documents: share of documents packed to a random shorter length (official)
    # masks: "static" = drawn once before training, every pass sees the same (official, dupe_factor 1) |
    # "dynamic" = redrawn at every batch
    masks: str = "static"
    max_predictions: int = 40  # static masks: at most this many masked positions per row (official 40)
    # static masks of selective / random: "sentence" = drawn per whole sentence before packing and trimming, every
    # token a candidate ([UNK] too; official sc_mask_gen.py) | "row" = drawn on the packed, trimmed row
    mask_positions: str = "sentence"
    # selective: which important tokens are kept under the cap: "logit" = highest raw class-1 logit (official
    # ModelGen) | "probability" = highest P(important)
    rank: str = "logit"

    def __post_init__(self):
        if not self.steps or min(self.steps) < 1:
            raise ValueError(f"taskpt.steps must be positive step counts, got {self.steps}")
        self.steps = sorted(set(self.steps))
        if self.budgets and min(self.budgets) < 1:
            raise ValueError(f"taskpt.budgets must be positive step counts, got {self.budgets}")
        self.budgets = sorted(set(self.budgets))
        bad = [m for m in self.methods if m not in TASKPT_METHODS]
        if bad or not self.methods:
            raise ValueError(f"unknown TaskPT method(s) {bad}; choose from {list(TASKPT_METHODS)}")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"taskpt.fallback must be 'none' (official) or 'random', got {self.fallback!r}")
        if self.select not in SELECT_CHOICES:
            raise ValueError(f"taskpt.select must be one of {list(SELECT_CHOICES)}, got {self.select!r}")
        if self.packing not in PACKINGS:
            raise ValueError(f"taskpt.packing must be one of {list(PACKINGS)}, got {self.packing!r}")
        if self.masks not in MASK_DRAWS:
            raise ValueError(f"taskpt.masks must be one of {list(MASK_DRAWS)}, got {self.masks!r}")
        if self.mask_positions not in MASK_POSITIONS:
            raise ValueError(
                f"taskpt.mask_positions must be one of {list(MASK_POSITIONS)}, got {self.mask_positions!r}"
            )
        if self.rank not in RANKS:
            raise ValueError(f"taskpt.rank must be one of {list(RANKS)}, got {self.rank!r}")
        if not 0 <= self.short_seq_prob <= 1 or self.max_predictions < 0:
            raise ValueError(
                f"taskpt.short_seq_prob must be in [0, 1] and taskpt.max_predictions >= 0 (0: no cap), "
                f"got {self.short_seq_prob}, {self.max_predictions}"
            )
        if not 0 < self.dev_fraction < 0.5:
            raise ValueError(f"taskpt.dev_fraction must be in (0, 0.5), got {self.dev_fraction}")


@dataclass
class FinetuneConfig:
    """Fine-tuning every checkpoint on the task (best epoch by dev accuracy, its test accuracy reported)."""

    lr: float = 2e-4  # paper: 2e-5 for BERT-base
    batch_size: int = 32
    epochs: float = 2.0
    max_length: int = 64
    warmup_ratio: float = 0.1
    # training sentences of the fine-tuning runs (0: task_max_examples); the scorer and tagger keep
    # task_max_examples. The per-seed sd of selective - random is 1.1 points at 1,600 (the `cpu` set), 6.6 at 400
    # (docs/measurements.md); 1,000 keeps `make run` within 15 minutes
    max_train: int = 1000

    def __post_init__(self):
        if self.max_train < 0:
            raise ValueError(f"finetune.max_train must be >= 0 (0: task_max_examples), got {self.max_train}")


@dataclass
class SelectiveConfig:
    out_dir: str = "runs/dev/01_selective_masking"  # where artifacts, figures, CSV and JSON are written
    task: str = "mr"  # labelled task (tmlib.tasks.data.load_task name)
    text_column: str = "text"  # your file's (or hub dataset's) text column
    label_column: str = "label"  # your file's label column
    encoding: str = "utf-8"  # your file's text encoding (e.g. latin-1)
    task_max_examples: int = 400  # cap per split, class-balanced (0: all)
    # fine-tuning runs test on "heldout": every example train and dev leave out | "split"
    test_pool: str = "heldout"
    max_test: int = 0  # cap on those test examples (0: all), class-balanced
    # fine-tuning seeds (the official ten start 13, 43, 83)
    seeds: list[int] = field(default_factory=lambda: [13, 43, 83])
    extra_seeds: list[int] = field(default_factory=list)  # more seeds for the final rows only (not the steps curve)
    pretrain_seed: int = 0  # seed of GenePT, scorer, buffer, tagger and TaskPT
    curve_all_budgets: bool = False  # fine-tune intermediate TaskPT checkpoints for every budget (else the smallest)
    mixed_precision: str = "auto"  # "auto" | "bf16" | "fp32" | "fp16" (GPU): autocast for every training stage
    eval_mixed_precision: str = "auto"  # fine-tuning runs' test evaluation: "auto" | "bf16" (3x faster) | "fp32"
    kernels: str = "fast"  # "fast" | "hf": how training computes the forward (tmlib.core.precision.KERNELS)
    threads: int = 0  # torch threads (0: torch's default); recorded in every manifest
    progress: bool = True  # progress bars and one log line per stage (also <out_dir>/progress.log)
    genept: GeneptConfig = field(default_factory=GeneptConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    buffer: BufferStageConfig = field(default_factory=BufferStageConfig)
    tagger: TaggerConfig = field(default_factory=TaggerConfig)
    taskpt: TaskptConfig = field(default_factory=TaskptConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("seeds is empty: give at least one fine-tuning seed, e.g. [0, 1, 2]")
        if set(self.extra_seeds) & set(self.seeds):
            raise ValueError(f"extra_seeds {self.extra_seeds} repeat seeds {self.seeds}; give seeds not in seeds")
        from tmlib.tasks.data import check_test_pool

        check_test_pool(self.test_pool)
        from tmlib.core.precision import check_kernels, resolve_fields

        resolve_fields(self, "mixed_precision", "eval_mixed_precision")

        check_kernels(self.kernels)
        for name, n in (
            ("genept.max_length", self.genept.max_length),
            ("taskpt.max_length", self.taskpt.max_length),
            ("finetune.max_length", self.finetune.max_length),
        ):
            if n < 16:
                raise ValueError(f"{name} must be >= 16, got {n}")
