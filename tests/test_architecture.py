"""The package direction of DESIGN.md, checked on every import statement of `knight/`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

KNIGHT = Path(__file__).resolve().parents[1] / "knight"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(KNIGHT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file (lazy imports count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = (
        _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    )
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
    return found


def _modules(*packages: str) -> dict[str, set[str]]:
    """Module name -> imports, for every .py file under the given packages or modules."""
    result: dict[str, set[str]] = {}
    for name in packages:
        target = KNIGHT.parent / name.replace(".", "/")
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
        for path in files:
            result[_module_name(path)] = _imports(path)
    return result


def _offenders(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {imported}"
        for module, imports in _modules(*packages).items()
        for imported in imports
        if any(_within(imported, bad) for bad in forbidden)
    )


def _within(imported: str, forbidden: str) -> bool:
    """`imported` is `forbidden` or inside it; the bare name `knight` means the top module only
    (`from knight import __version__`), since every package is inside it."""
    if forbidden == "knight":
        return imported == "knight"
    return imported == forbidden or imported.startswith(forbidden + ".")


KNIGHT_PACKAGES = tuple(
    f"knight.{p.stem}"
    for p in KNIGHT.iterdir()
    if p.suffix == ".py" or (p / "__init__.py").exists()
)

# The failure taxonomy is built on the simulator's error classes (they state the trace-stage
# categories, and npu cannot import upwards); the rest of npu stays out of the core types.
NPU_BUT_ERRORS = tuple(
    f"knight.npu.{p.stem}"
    for p in (KNIGHT / "npu").iterdir()
    if p.stem not in ("__init__", "errors") and (p.suffix == ".py" or (p / "__init__.py").exists())
)

RULES = [
    # (packages, what they must not import, why)
    (("knight.npu",), tuple(p for p in KNIGHT_PACKAGES if p != "knight.npu") + ("knight",),
     "the simulator imports nothing else from Knight"),
    (("knight.evaluation",), ("knight.agent", "knight.store"), "evaluation sits below the loop"),
    (("knight.proposers",), ("knight.store",), "proposers receive a context, never the store"),
    (("knight.agent", "knight.cli"), ("sqlalchemy",), "the loop and the CLI speak the store API"),
    (("knight.patch",), ("knight.agent", "knight.store", "knight.evaluation", "knight.proposers",
                         "knight.npu"), "patching is a pure text algorithm on core types"),
    (("knight.failure", "knight.proposal", "knight.source"),
     ("knight.agent", "knight.store", "knight.evaluation", "knight.proposers", "knight.patch")
     + NPU_BUT_ERRORS, "core types import no package above them"),
    (("knight.store",), ("knight.agent", "knight.proposers", "knight.evaluation"),
     "the store holds records, not the packages that make them"),
]  # fmt: skip


@pytest.mark.parametrize("packages, forbidden, why", RULES, ids=[r[2] for r in RULES])
def test_package_direction(packages: tuple[str, ...], forbidden: tuple[str, ...], why: str) -> None:
    assert _offenders(packages, forbidden) == [], why


def test_the_checker_sees_imports_at_any_depth() -> None:
    """A lazy import inside a function is still an import (the CLI imports lazily)."""
    cli = _modules("knight.cli")["knight.cli"]
    assert "knight.agent.loop" in cli and "knight.store" in cli
    assert _offenders(("knight.cli",), ("knight.agent",)) != []  # it would catch a violation
