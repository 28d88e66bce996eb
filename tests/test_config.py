from dataclasses import dataclass, field

import pytest

from tmlib.core.config import ConfigError, config_hash, from_dict, load_yaml, notebook_config


@dataclass
class Inner:
    tau: float = 0.01


@dataclass
class Cfg:
    model: str = "minilm"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    lr: float = 1e-3
    steps: int = 10
    fallback: bool = False
    inner: Inner = field(default_factory=Inner)
    note: str | None = None


def test_from_dict_coerces_and_nests():
    cfg = from_dict(Cfg, {"lr": 1, "seeds": [3], "inner": {"tau": 0}})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.seeds == [3] and cfg.inner.tau == 0.0


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ({"modle": "x"}, "unknown parameter(s) modle"),
        ({"steps": "10"}, "steps: expected an integer"),
        ({"steps": 1.5}, "steps: expected an integer"),
        ({"fallback": "yes"}, "fallback: expected true/false"),
        ({"seeds": 3}, "seeds: expected a list"),
        ({"seeds": ["a"]}, "seeds[0]: expected an integer"),
        ({"inner": {"tua": 1}}, "inner.tua"),
        ({"lr": True}, "lr: expected a number"),
    ],
)
def test_from_dict_rejects(bad, fragment):
    with pytest.raises(ConfigError) as exc:
        from_dict(Cfg, bad)
    assert fragment in str(exc.value)


def test_unknown_parameter_lists_valid_names():
    with pytest.raises(ConfigError, match="valid names: .*model"):
        from_dict(Cfg, {"nope": 1})


def test_config_hash_stable_and_sensitive():
    assert config_hash(Cfg()) == config_hash(Cfg())
    assert config_hash(Cfg()) != config_hash(Cfg(lr=2e-3))


def test_load_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: minilm\nseeds: [0, 1\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*bad.yaml \(line"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(lst)
    nonutf = tmp_path / "latin1.yaml"
    nonutf.write_bytes("model: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_yaml(nonutf)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}


def test_notebook_config_rejects_injected_typo():
    ns = {"np": object, "_before": set()}
    before = set(ns)
    ns.update({"model": "minilm", "steps": 5})
    assert notebook_config(Cfg, ns, before).steps == 5
    ns["stesp"] = 7  # what papermill would inject for a misspelt -p stesp 7
    with pytest.raises(ConfigError, match="stesp"):
        notebook_config(Cfg, ns, before)


def test_flat_names_map_onto_nested_stage_configs():
    from dataclasses import dataclass, field

    from tmlib.core.config import ConfigError, flatten, from_flat

    @dataclass
    class Inner:
        lr: float = 1e-3
        steps: list[int] = field(default_factory=lambda: [1])

    @dataclass
    class Outer:
        task: str = "mr"
        task_max_examples: int = 0
        genept: Inner = field(default_factory=Inner)

    flat = flatten(Outer())
    assert flat == {"task": "mr", "task_max_examples": 0, "genept_lr": 1e-3, "genept_steps": [1]}
    cfg = from_flat(Outer, {"genept_lr": 5e-4, "task_max_examples": 3})
    assert cfg.genept.lr == 5e-4 and cfg.genept.steps == [1] and cfg.task_max_examples == 3
    assert from_flat(Outer, flat) == Outer()
    with pytest.raises(ConfigError, match="genept_lrr.*valid names: genept_lr, genept_steps, task"):
        from_flat(Outer, {"genept_lrr": 1.0})
    with pytest.raises(ConfigError, match="genept.lr: expected a number"):
        from_flat(Outer, {"genept_lr": "fast"})
