"""Canonical kernel source and its content hash: what makes two candidates "the same"."""

from __future__ import annotations

import ast
import hashlib


def canonical_source(text: str) -> str:
    """LF line endings, no trailing whitespace, no trailing blank lines, one final newline
    (an all-blank text is the empty string)."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def source_hash(text: str) -> str:
    """sha256 (hex) of the canonical form of a kernel's source."""
    return hashlib.sha256(canonical_source(text).encode()).hexdigest()


def defined_functions(source: str) -> set[str]:
    """Names of the top-level functions in `source` (empty if it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
