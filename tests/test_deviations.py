"""Every patch of a library's internals (docs/deviations.md) was verified against exact library versions."""

import importlib.metadata
import re
from pathlib import Path

import pytest

from components.mesh.tuning import COMPONENT_DEFAULTS, VERIFIED_VERSIONS
from router.tuning import DEFAULT_SETTINGS as ROUTER_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("package", sorted(VERIFIED_VERSIONS))
def test_the_installed_library_is_the_one_the_patches_were_verified_against(package):
    installed = importlib.metadata.version(package)
    assert installed == VERIFIED_VERSIONS[package], (
        f"{package} {installed} is installed, but nerve's patches of its internals (docs/deviations.md) were verified "
        f"against {VERIFIED_VERSIONS[package]}: run tests/test_router.py, tests/test_framing.py and "
        f"bench/tuning_bench.py for each setting, then update VERIFIED_VERSIONS in components/mesh/tuning.py "
        f"and the pin in pyproject.toml")


def test_the_project_pins_the_versions_it_verified():
    pins = dict(re.findall(r'"(autobahn|crossbar|twisted)==([^"]+)"', (ROOT / "pyproject.toml").read_text()))
    assert pins == dict(VERIFIED_VERSIONS)


def test_every_switch_has_a_row_in_the_deviations_doc():
    doc = (ROOT / "docs" / "deviations.md").read_text()
    missing = sorted(name for name in set(COMPONENT_DEFAULTS) | set(ROUTER_DEFAULTS) if f"`{name}`" not in doc)
    assert not missing, f"switches without a row in docs/deviations.md: {missing}"
