"""Every notebook follows the suite's conventions (fast checks; the smoke runs live beside each module's tests)."""
import json

import papermill as pm
import pytest
import yaml

from tmlib.config import ConfigError
from tmlib.suite import PARAMS, notebooks, params_file, run_suite

NOTEBOOKS = notebooks()
SETS = ("smoke", "default", "paper")


def test_suite_has_notebooks():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_conventions(nb):
    doc = json.loads(nb.read_text())
    tagged = [c for c in doc["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    code = [c for c in doc["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit notebooks with outputs stripped"
    params = pm.inspect_notebook(str(nb))
    assert "out_dir" in params
    for name, p in params.items():
        assert p["help"], f"parameter {name} needs a '# comment' (shown by papermill --help-notebook)"
    for s in SETS:
        values = yaml.safe_load(params_file(nb, s).read_text()) or {}
        unknown = set(values) - set(params)
        assert not unknown, f"{s}.yaml sets parameters the notebook does not have: {unknown}"
    default = yaml.safe_load(params_file(nb, "default").read_text()) or {}
    for name, value in default.items():
        assert eval(params[name]["default"]) == value, f"parameters cell default of {name} differs from default.yaml"


def test_malformed_yaml_stops_before_running(tmp_path, monkeypatch):
    nb = NOTEBOOKS[0]
    bad = PARAMS / nb.stem / "zz_broken_test.yaml"
    bad.write_text("seeds: [0, 1\n")
    try:
        with pytest.raises(ConfigError, match="malformed YAML"):
            run_suite("zz_broken_test", tmp_path, only=[nb.stem[:2]])
    finally:
        bad.unlink()
    assert not list(tmp_path.glob("*.ipynb"))


def test_missing_parameter_set(tmp_path):
    with pytest.raises(ConfigError, match="parameter set 'nonexistent' is missing"):
        run_suite("nonexistent", tmp_path)
