"""`shared/` is layered (shared/__init__.py, docs/architecture.md): each package imports only the
packages it may, and nothing in `shared/` imports a deployable (`functions/`, `realtime/`) or
`infra/`. Every import counts, the ones inside functions and under `TYPE_CHECKING` too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Each layer and the layers it may import (its own modules it may always import).
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "providers": {"core"},
    "store": {"core"},
    "auth": {"core", "store"},
    "web": {"core", "store", "auth"},
    "resources": {"core", "providers", "store", "auth", "web"},
    "pipeline": {"core", "providers", "store", "auth", "web", "resources"},
    "chat": {"core", "providers", "store", "auth", "web", "resources"},
}
DEPLOYABLES = ("functions", "realtime", "infra")


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module `tree` imports (`from a.b import c` counts as `a.b.c`: c may be a module)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def violations(shared: Path) -> list[str]:
    """What breaks the layering in the package at `shared`, one line each."""
    broken = []
    for path in sorted(shared.rglob("*.py")):
        parts = path.relative_to(shared).parts
        where = f"{path.relative_to(shared.parent)}"
        if len(parts) == 1:
            if parts[0] != "__init__.py":
                broken.append(f"{where}: a module outside every layer")
            continue
        layer = parts[0]
        if layer not in MAY_IMPORT:
            broken.append(f"{where}: {layer}/ is not a layer")
            continue
        for line, module in _imported(ast.parse(path.read_text(), str(path))):
            top, _, rest = module.partition(".")
            if top in DEPLOYABLES:
                broken.append(f"{where}:{line}: imports {module} (a deployable or infra)")
            elif top == "shared":
                target = rest.partition(".")[0]
                if target not in MAY_IMPORT:  # `from shared import x`: x is not a layer
                    broken.append(f"{where}:{line}: imports {module}, outside every layer")
                elif target != layer and target not in MAY_IMPORT[layer]:
                    broken.append(f"{where}:{line}: {layer} imports {target} ({module})")
    return broken


def test_shared_keeps_its_layers():
    assert violations(ROOT / "shared") == []


def test_every_layer_says_what_it_may_import():
    for layer in MAY_IMPORT:
        docstring = ast.get_docstring(
            ast.parse((ROOT / "shared" / layer / "__init__.py").read_text())
        )
        assert docstring and "May import:" in docstring, layer


@pytest.mark.parametrize(
    ("module", "source", "complaint"),
    [
        ("providers/x.py", "from shared.store.firestore import db\n", "providers imports store"),
        ("core/x.py", "def f():\n    from shared.web import router\n", "core imports web"),
        ("store/x.py", "import shared.resources.users\n", "store imports resources"),
        ("chat/x.py", "from shared.pipeline import sweep\n", "chat imports pipeline"),
        ("pipeline/x.py", "from shared.chat.loop import Turn\n", "pipeline imports chat"),
        ("web/x.py", "from realtime.app import app\n", "realtime.app.app (a deployable"),
        (
            "resources/x.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from infra import local\n",
            "infra.local",
        ),
        ("resources/x.py", "from shared import memories\n", "outside every layer"),
        ("stray.py", "", "a module outside every layer"),
    ],
)
def test_a_planted_violation_is_found(tmp_path: Path, module: str, source: str, complaint: str):
    shared = tmp_path / "shared"
    for layer in MAY_IMPORT:
        (shared / layer).mkdir(parents=True)
        (shared / layer / "__init__.py").write_text('"""May import: ..."""\n')
    (shared / "resources" / "fine.py").write_text("from shared.web.router import Router\n")
    assert violations(shared) == []
    (shared / module).write_text(source)
    found = violations(shared)
    assert len(found) == 1 and complaint in found[0], found
