import pytest
import torch

from tmlib.core import models
from tmlib.core.training import TrainConfig, fit
from tmlib.masking import MaskConfig, export_mask, read_mask, to_plain
from tmlib.masking.methods import prepare_method
from tmlib.masking.multitask import MultiTaskMaskedModel, fp32_model_bytes
from tmlib.masking.packing import MaskFileError
from tmlib.tasks.classify import Classification


def _backbone(labels=("a", "b")):
    return models.load_classifier("scratch:tiny", list(labels), seed=0)


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory, tokenizer):
    """Two masked models trained separately (2 and 3 classes, one with a trained head) on the same backbone."""
    from tmlib.tasks.data import stratified_split

    d = tmp_path_factory.mktemp("mt")
    texts = ["great film", "awful film", "great cast", "awful cast", "fine story", "dull story"] * 4
    t2 = stratified_split(texts, [1, 0, 1, 0, 1, 0] * 4, ["neg", "pos"], seed=0, fractions=(0.5, 0.25, 0.25))
    t3 = stratified_split(texts, [0, 1, 2, 0, 1, 2] * 4, ["x", "y", "z"], seed=0, fractions=(0.5, 0.25, 0.25))
    out = {}
    for name, data, head in (("sent", t2, "masked"), ("topic", t3, "trained")):
        labels = data["train"].features["label"].names
        prep = prepare_method(
            "mask",
            models.load_classifier("scratch:tiny", labels, seed=1),
            seed=0,
            mask_config=MaskConfig(skip_first_blocks=1, head=head),
        )
        cfg = prep.train_config(TrainConfig(batch_size=4, epochs=2, max_length=12, progress=False), lr=0.05)
        fit(prep.model, data, cfg, Classification(tokenizer), params=prep.params, optimizer_cls=prep.optimizer_cls)
        out[name] = (prep.model.eval(), export_mask(prep.model, d / f"{name}.safetensors", backbone="scratch:tiny"))
    return out


def test_identical_to_separately_trained_models(two_tasks, tokenizer):
    # load_classifier(seed=1) built the trained models; the backbone's frozen weights are the same for any head seed
    mt = MultiTaskMaskedModel(models.load_classifier("scratch:tiny", ["a", "b"], seed=1), tokenizer, "scratch:tiny")
    for name, (_, path) in two_tasks.items():
        mt.add_task(name, path)
    batch = tokenizer(["great film indeed", "a dull and awful story", "fine"], padding=True, return_tensors="pt")
    for _ in range(2):  # switch back and forth: nothing leaks between tasks
        for name, (model, _) in two_tasks.items():
            with torch.no_grad():
                ref = model(**batch).logits
                plain = to_plain(model).eval()(**batch).logits
            got = mt.forward(name, **batch).logits
            assert torch.equal(got, ref) and torch.equal(got, plain), name
    assert mt.logits("topic", ["great film indeed"]).shape == (1, 3)
    assert set(mt.predict("sent", ["great film", "awful"])) <= {"neg", "pos"}
    with pytest.raises(KeyError, match="loaded tasks: \\['sent', 'topic'\\]"):
        mt.activate("nli")


def test_memory_backbone_once_plus_bits_per_task(two_tasks, tokenizer):
    mt = MultiTaskMaskedModel(models.load_classifier("scratch:tiny", ["a", "b"], seed=1), tokenizer, "scratch:tiny")
    mt.add_task("sent", two_tasks["sent"][1])
    m1 = mt.memory_bytes()
    mt.add_task("topic", two_tasks["topic"][1])
    m2 = mt.memory_bytes()
    assert m2["backbone"] == m1["backbone"] and m2["working"] == m1["working"]
    per = read_mask(two_tasks["sent"][1]).nbytes()
    assert m2["tasks"]["sent"] == per and m2["total"] - m1["total"] == m2["tasks"]["topic"]
    fp32 = fp32_model_bytes(two_tasks["sent"][0])
    assert m2["backbone"] == pytest.approx(fp32, rel=0.01)
    assert per < fp32 / 32


def test_rejects_other_backbone_or_duplicate(two_tasks, tokenizer):
    mt = MultiTaskMaskedModel(models.load_classifier("scratch:tiny", ["a", "b"], seed=1), tokenizer, "scratch:tiny")
    mt.add_task("sent", two_tasks["sent"][1])
    with pytest.raises(ValueError, match="already loaded"):
        mt.add_task("sent", two_tasks["sent"][1])
    torch.manual_seed(123)
    other = models.load_classifier("scratch:tiny", ["a", "b"])  # different random backbone weights
    with pytest.raises(MaskFileError, match="other backbone weights"):
        MultiTaskMaskedModel(other, tokenizer, "x").add_task("sent", two_tasks["sent"][1])
