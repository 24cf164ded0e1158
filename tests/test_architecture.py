"""The dependency direction, in code: layers/ and pipeline/ never import each other or recipes/.

`stenograph.layers` knows nothing of data and `stenograph.pipeline` nothing of models;
`stenograph.recipes` composes the two. Every module's imports are read with `ast`
(absolute, relative, inside functions, under ``TYPE_CHECKING`` and literal
``importlib.import_module`` names alike), so a forbidden import fails here before
anyone relies on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent

# Package -> the stenograph packages it must not import.
FORBIDDEN = {
    "layers": {"pipeline", "recipes"},
    "pipeline": {"layers", "recipes"},
}


def module_package(path: Path) -> list[str]:
    """The dotted package a file's relative imports start from, e.g. stenograph.pipeline."""
    return ["stenograph", *path.relative_to(REPOSITORY).parent.parts]


def imported_modules(source: str, package: list[str]) -> set[str]:
    """Every module a source imports, as absolute dotted names.

    Args:
        source: Python source text.
        package: The package the source lives in (for relative imports), as parts.

    Returns:
        Absolute module names; ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be
        a module).
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = [*base, *(node.module.split(".") if node.module else [])]
            names.add(".".join(module))
            names.update(".".join([*module, alias.name]) for alias in node.names)
        elif _is_import_module_call(node):
            names.add(node.args[0].value)
    return names


def _is_import_module_call(node: ast.AST) -> bool:
    """`importlib.import_module("literal")` or `import_module("literal")`."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    function = node.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    first = node.args[0]
    return (
        name == "import_module"
        and isinstance(first, ast.Constant)
        and isinstance(first.value, str)
        and not first.value.startswith(".")
    )


def forbidden_imports(source: str, package: list[str], forbidden: set[str]) -> list[str]:
    """The imported modules of `source` that belong to a forbidden stenograph package."""
    return sorted(
        name
        for name in imported_modules(source, package)
        if name.split(".")[:2] in (["stenograph", other] for other in forbidden)
    )


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (REPOSITORY / folder).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_and_pipeline_import_neither_each_other_nor_recipes(folder):
    modules = _modules(folder)
    assert len(modules) >= 5, modules  # the folder was found, so the check is not vacuous
    violations = {
        str(path.relative_to(REPOSITORY)): found
        for path in modules
        if (
            found := forbidden_imports(
                path.read_text(encoding="utf-8"), module_package(path), FORBIDDEN[folder]
            )
        )
    }
    assert violations == {}, f"{folder}/ must not import {sorted(FORBIDDEN[folder])}"


def test_recipes_do_import_both_packages():
    """The checker sees real imports: recipes/ (allowed to) imports layers and pipeline."""
    found = set()
    for path in _modules("recipes"):
        for name in imported_modules(path.read_text(encoding="utf-8"), module_package(path)):
            found.add(".".join(name.split(".")[:2]))
    assert {"stenograph.layers", "stenograph.pipeline"} <= found


PIPELINE = ["stenograph", "pipeline"]


OFFENDING_SOURCES = [
    ("import stenograph.recipes.train", ["stenograph.recipes.train"]),
    ("from stenograph.layers import ctc_loss", ["stenograph.layers", "stenograph.layers.ctc_loss"]),
    (
        "from ..layers.ctc import ctc_min_frames",
        ["stenograph.layers.ctc", "stenograph.layers.ctc.ctc_min_frames"],
    ),
    ("from .. import recipes", ["stenograph.recipes"]),
    (
        "def f():\n    from ..recipes import config\n",
        ["stenograph.recipes", "stenograph.recipes.config"],
    ),
    (
        "if TYPE_CHECKING:\n    from stenograph.layers import LSTM",
        ["stenograph.layers", "stenograph.layers.LSTM"],
    ),
    (
        "import importlib\nimportlib.import_module('stenograph.recipes.cli')",
        ["stenograph.recipes.cli"],
    ),
    ("from . import audio\nfrom .errors import Problem\nimport tensorflow as tf\n", []),
    ("from stenograph.pipeline.text import Vocabulary", []),
]


@pytest.mark.parametrize(("source", "expected"), OFFENDING_SOURCES)
def test_the_checker_catches_every_form_of_a_forbidden_import(source, expected):
    assert forbidden_imports(source, PIPELINE, FORBIDDEN["pipeline"]) == expected


def test_relative_imports_resolve_from_the_module_package():
    assert imported_modules("from .ctc import ctc_loss", ["stenograph", "layers"]) == {
        "stenograph.layers.ctc",
        "stenograph.layers.ctc.ctc_loss",
    }
    assert module_package(REPOSITORY / "pipeline" / "dataset.py") == PIPELINE
    layers_source = "from ..pipeline import dataset"
    assert forbidden_imports(layers_source, ["stenograph", "layers"], FORBIDDEN["layers"]) == [
        "stenograph.pipeline",
        "stenograph.pipeline.dataset",
    ]
