"""Readable transcripts of model conversations, shared by the Claude and command proposers."""

from __future__ import annotations

from typing import Any

from knight.proposal import Turn


def turn(role: str, kind: str, content: str, round: int, **extra: Any) -> Turn:
    """One transcript entry (kinds: system, prompt-section, text, thinking, tool_use, tool_result, error)."""
    return Turn(role=role, kind=kind, round=round, content=content, **extra)


def patch_text(data: dict[str, Any]) -> str:
    """A submit_patch input as people read it: hypothesis, then SEARCH/REPLACE blocks."""
    lines = [f"hypothesis: {data.get('hypothesis', '')}", f"rationale: {data.get('rationale', '')}"]
    if data.get("tags") or data.get("skills_used"):
        lines.append(f"tags: {data.get('tags')}; skills used: {data.get('skills_used')}")
    edits = data.get("edits")
    for i, edit in enumerate(edits if isinstance(edits, list) else []):
        if not isinstance(edit, dict):
            lines.append(f"edit {i + 1}: {edit!r}")
            continue
        lines += [
            f"edit {i + 1}: {edit.get('file')}",
            "<<<<<<< SEARCH",
            str(edit.get("search", "")).rstrip("\n"),
            "=======",
            str(edit.get("replace", "")).rstrip("\n"),
            ">>>>>>> REPLACE",
        ]
    return "\n".join(lines)
