"""The failure taxonomy, re-exported from its one definition in `knight.failure`."""

from knight.failure import FIXABLE, HINTS, STAGES, Category, Stage, stage_of

__all__ = ["FIXABLE", "HINTS", "STAGES", "Category", "Stage", "stage_of"]
