"""Applying a proposal's search/replace edits: the patch ladder, a pure text algorithm."""

from knight.patch.ladder import AppliedPatch, PatchError, apply_edits, render_diff

__all__ = ["AppliedPatch", "PatchError", "apply_edits", "render_diff"]
