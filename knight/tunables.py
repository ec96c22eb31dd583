"""Knobs: the module-level constants a kernel declares in its `TUNABLES` mapping.

`TUNABLES = {"NAME": [allowed values]}` says which constants may be set and to what. Reading
them and rewriting a constant's assignment are pure text operations on the kernel source.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from knight.proposal import Edit


@dataclass(frozen=True)
class Knob:
    """One declared knob: its name, current value, allowed values and the line assigning it."""

    name: str
    value: Any
    allowed: tuple[Any, ...]
    line: str  # the source line that assigns the constant (exact text)


def read_knobs(source: str) -> dict[str, Knob]:
    """Every knob declared in `source`'s TUNABLES, with its current value (empty if none)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    lines = source.splitlines()
    assigns: dict[str, tuple[Any, str]] = {}
    declared: dict[str, tuple[Any, ...]] = {}
    for node in tree.body:
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            continue
        name = node.targets[0].id
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            continue
        if name == "TUNABLES" and isinstance(value, dict):
            declared = {k: tuple(v) for k, v in value.items() if isinstance(v, (list, tuple))}
        elif node.lineno == node.end_lineno:
            assigns[name] = (value, lines[node.lineno - 1])
    return {
        name: Knob(name, assigns[name][0], allowed, assigns[name][1])
        for name, allowed in declared.items()
        if name in assigns
    }


def knob_edit(knob: Knob, value: Any, file: str) -> Edit:
    """The edit that sets `knob` to `value`, keeping the line's indentation and comment."""
    if value not in knob.allowed:
        raise ValueError(
            f"{knob.name}={value!r} is not among its allowed values {list(knob.allowed)}"
        )
    head, _, rest = knob.line.partition("=")
    code, hash_, after = rest.partition("#")
    comment = f"  #{after}" if hash_ else ""
    return Edit(
        file=file, search=knob.line, replace=f"{head.rstrip()} = {_literal(value, code)}{comment}"
    )


def _literal(value: Any, old_code: str) -> str:
    """`value` as Python source, quoting strings the way the line already did (so undoing a
    change restores the original text, and its hash)."""
    if isinstance(value, str) and '"' in old_code and "'" not in old_code and '"' not in value:
        return f'"{value}"'
    return repr(value)


def knob_edits(source: str, settings: dict[str, Any], file: str) -> list[Edit]:
    """Edits for several knob settings at once; unknown knobs raise ValueError."""
    knobs = read_knobs(source)
    unknown = set(settings) - set(knobs)
    if unknown:
        raise ValueError(f"unknown knob(s) {sorted(unknown)}; this kernel declares {sorted(knobs)}")
    return [knob_edit(knobs[k], v, file) for k, v in settings.items() if knobs[k].value != v]
