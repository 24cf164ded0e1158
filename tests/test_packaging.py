"""Guards on the install layout: every source package is installed under `stenograph.`."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP_LEVEL = {
    "layers": "stenograph.layers",
    "pipeline": "stenograph.pipeline",
    "recipes": "stenograph.recipes",
}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _source_packages() -> set[str]:
    found = set()
    for folder, dotted in TOP_LEVEL.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((dotted, *relative)))
    return found


def test_every_source_package_is_listed_for_installation():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    missing = _source_packages() - listed
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_top_level_folders_map_into_one_namespace():
    package_dir = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert package_dir == {dotted: folder for folder, dotted in TOP_LEVEL.items()}


def test_console_script_points_into_the_namespace():
    scripts = _pyproject()["project"]["scripts"]
    assert scripts["stenograph"].startswith("stenograph.recipes.")
