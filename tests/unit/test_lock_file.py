"""``requirements.lock`` is what ``make setup`` installs: every dependency pinned, with
hashes, and this environment holds exactly those versions."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _pins(lock: str = "requirements.lock") -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) for each pinned package of the lock."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in (ROOT / lock).read_text().splitlines():
        if match := PIN.match(line):
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def test_every_dependency_of_pyproject_is_pinned_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pins = _pins()
    for spec in wanted:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock: run `make lock`"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside pyproject's {requirement}"
        )
    assert all(hashes > 0 for _, hashes in pins.values()), "a pin without its hash"


def test_the_environment_holds_the_locked_versions() -> None:
    wrong = {
        name: (version, metadata.version(name))
        for name, (version, _) in _pins().items()
        if metadata.version(name) != version
    }
    assert wrong == {}, "installed versions differ from requirements.lock: run `make setup`"


def test_the_image_lock_has_the_same_pins_without_the_dev_tools() -> None:
    """deploy/requirements.lock, what the Dockerfile installs: a subset of the tested pins,
    with every runtime dependency and none of the dev extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    image, tested = _pins("deploy/requirements.lock"), _pins()
    assert {name: version for name, (version, _) in image.items()} == {
        name: tested[name][0] for name in image
    }, "the two locks disagree: run `make lock`"
    for spec in project["dependencies"]:
        assert canonicalize_name(Requirement(spec).name) in image, spec
    for spec in ("pytest", "mypy", "ruff", "schemathesis"):
        assert spec not in image
    assert all(hashes > 0 for _, hashes in image.values())
