import pytest

from tmlib.core import models
from tmlib.core.models import ModelUnavailableError


def test_minilm_classifier_and_tokenizer(tokenizer):
    m = models.load_classifier("minilm", ["neg", "pos"], seed=0)
    assert m.config.num_labels == 2 and m.config.id2label == {0: "neg", 1: "pos"}
    assert m.config.hidden_size == 384 and m.config.num_hidden_layers == 6
    assert 22_000_000 < models.count_parameters(m) < 23_500_000
    assert tokenizer("Hello world")["input_ids"][:2] == [101, 7592]  # bert-base-uncased WordPiece


def test_scratch_sizes_share_the_vocab():
    m = models.load_mlm("scratch:tiny", seed=0)
    assert m.config.vocab_size == 30522 and m.config.hidden_size == 64
    a = models.load_mlm("scratch:tiny", seed=0).state_dict()
    assert all((a[k] == v).all() for k, v in m.state_dict().items())  # seeded init


def test_unknown_scratch_size():
    with pytest.raises(ModelUnavailableError, match="unknown scratch size 'huge'"):
        models.load_mlm("scratch:huge")


def test_hub_name_fails_fast_offline(monkeypatch):
    """HF_HUB_OFFLINE=1: the error comes without a connection attempt (one could hang for its whole timeout)."""
    import socket

    from tmlib.core import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tried = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: tried.append(a) or socket.socket())
    hub.hub_reachable.cache_clear()
    with pytest.raises(ModelUnavailableError, match=r"'bert-base-uncased' .*offline.*'minilm'"):
        models.load_tokenizer("bert-base-uncased")
    hub.hub_reachable.cache_clear()
    assert tried == []


def test_bad_paths(tmp_path):
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        models.resolve("./no/such/checkpoint")
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        models.resolve(str(tmp_path))
    with pytest.raises(ModelUnavailableError, match="non-empty"):
        models.resolve("")


def test_saved_checkpoint_roundtrip(tmp_path):
    m = models.load_classifier("scratch:tiny", ["a", "b", "c"], seed=1)
    m.save_pretrained(tmp_path / "ck")
    again = models.load_classifier(str(tmp_path / "ck"), ["a", "b", "c"])
    assert all((again.state_dict()[k] == v).all() for k, v in m.state_dict().items())


def test_hub_name_loads_offline_from_a_local_hub_cache(tmp_path, monkeypatch):
    """The hub code path for real, without a network: a checkpoint stored under a hub name in a local
    hub cache (the layout huggingface_hub writes), the hub set offline; an uncached name still fails clearly."""
    import torch

    from tmlib.core.models import ModelUnavailableError, load_mlm, load_tokenizer

    name = "google/multiberts-seed_0-step_100k"
    snap = tmp_path / "hub" / ("models--" + name.replace("/", "--")) / "snapshots" / ("0" * 40)
    model = load_mlm("scratch:tiny", seed=0)
    model.save_pretrained(snap)
    load_tokenizer("minilm").save_pretrained(snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    got = load_mlm(name)
    for (k, a), b in zip(model.state_dict().items(), got.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    assert load_tokenizer(name).vocab_size == 30522
    with pytest.raises(ModelUnavailableError, match="not .*in the local hub cache.*offline"):
        load_mlm("google/multiberts-seed_0-step_200k")
