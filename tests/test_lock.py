"""constraints.txt, the versions the tests passed with, agrees with pyproject.toml: every dependency (the optional
ones too) is pinned there to a version its range allows; make's setup installs through it."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-\[\],]+)==([^\s;]+)", line)
        assert m, f"constraints.txt: {line!r} is not NAME==VERSION"
        out[canonicalize_name(m.group(1).split("[")[0])] = m.group(2)
    return out


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def disagreements(reqs: list[Requirement], pinned: dict[str, str]) -> list[str]:
    bad = []
    for req in reqs:
        version = pinned.get(canonicalize_name(req.name))
        if version is None:
            bad.append(f"{req.name} is not pinned")
        elif not req.specifier.contains(version, prereleases=True):
            bad.append(f"{req.name}=={version} is outside {req.specifier}")
    return bad


def test_pyproject_and_constraints_agree():
    pinned = pins((ROOT / "constraints.txt").read_text())
    assert disagreements(requirements(), pinned) == [], "run make lock (then make test)"
    assert pinned["torch"] == "2.13.0"


def test_a_pin_outside_a_range_or_a_missing_pin_is_found():
    reqs = [Requirement("transformers>=5.0,<6"), Requirement("seqeval==1.2.2")]
    assert disagreements(reqs, {"transformers": "6.0.1", "seqeval": "1.2.2"}) == [
        "transformers==6.0.1 is outside <6,>=5.0"
    ]
    assert disagreements(reqs, {"transformers": "5.2"}) == ["seqeval is not pinned"]


def test_setup_installs_through_the_constraints():
    make = (ROOT / "Makefile").read_text()
    assert "-e '.[dev,lab]' -c constraints.txt" in make and "$(STAMP): pyproject.toml constraints.txt" in make
