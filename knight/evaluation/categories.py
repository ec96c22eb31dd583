"""The closed failure taxonomy (DESIGN.md): every way a candidate can fail, by stage, with the
skill that explains the usual fix."""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    # proposal
    proposer_error = "proposer_error"
    malformed_proposal = "malformed_proposal"
    # patch
    patch_no_match = "patch_no_match"
    patch_ambiguous = "patch_ambiguous"
    patch_outside_editable = "patch_outside_editable"
    patch_noop = "patch_noop"
    duplicate_candidate = "duplicate_candidate"
    # static
    syntax_error = "syntax_error"
    forbidden_construct = "forbidden_construct"
    # trace
    shape_error = "shape_error"
    resource_overflow = "resource_overflow"
    illegal_access = "illegal_access"
    dtype_error = "dtype_error"
    uninitialized_read = "uninitialized_read"
    host_sync = "host_sync"
    race = "race"
    kernel_exception = "kernel_exception"
    # run
    timeout = "timeout"
    memory_limit = "memory_limit"
    worker_crash = "worker_crash"
    # correctness
    mismatch_rounding = "mismatch_rounding"
    mismatch_partial = "mismatch_partial"
    mismatch_values = "mismatch_values"
    nan_or_inf = "nan_or_inf"
    # integrity
    input_mutation = "input_mutation"
    nondeterministic = "nondeterministic"
    input_independent = "input_independent"
    below_physical_floor = "below_physical_floor"
    heldout_failure = "heldout_failure"
    # performance
    regression = "regression"
    no_gain = "no_gain"


STAGES: dict[str, tuple[Category, ...]] = {
    "proposal": (Category.proposer_error, Category.malformed_proposal),
    "patch": (
        Category.patch_no_match, Category.patch_ambiguous, Category.patch_outside_editable,
        Category.patch_noop, Category.duplicate_candidate,
    ),
    "static": (Category.syntax_error, Category.forbidden_construct),
    "trace": (
        Category.shape_error, Category.resource_overflow, Category.illegal_access, Category.dtype_error,
        Category.uninitialized_read, Category.host_sync, Category.race, Category.kernel_exception,
    ),
    "run": (Category.timeout, Category.memory_limit, Category.worker_crash),
    "correctness": (
        Category.mismatch_rounding, Category.mismatch_partial, Category.mismatch_values, Category.nan_or_inf,
    ),
    "integrity": (
        Category.input_mutation, Category.nondeterministic, Category.input_independent,
        Category.below_physical_floor, Category.heldout_failure,
    ),
    "performance": (Category.regression, Category.no_gain),
}

# The skill (skills/<name>/SKILL.md) a proposer should read after each kind of failure.
HINTS: dict[Category, str] = {
    Category.patch_no_match: "patching",
    Category.patch_ambiguous: "patching",
    Category.patch_outside_editable: "patching",
    Category.patch_noop: "patching",
    Category.duplicate_candidate: "patching",
    Category.syntax_error: "kernel-language",
    Category.forbidden_construct: "kernel-rules",
    Category.shape_error: "kernel-language",
    Category.resource_overflow: "sbuf-psum-budget",
    Category.illegal_access: "kernel-language",
    Category.dtype_error: "kernel-language",
    Category.uninitialized_read: "kernel-language",
    Category.host_sync: "kernel-rules",
    Category.race: "kernel-rules",
    Category.kernel_exception: "kernel-language",
    Category.timeout: "kernel-rules",
    Category.memory_limit: "kernel-rules",
    Category.worker_crash: "kernel-rules",
    Category.mismatch_rounding: "precision-alignment",
    Category.mismatch_partial: "precision-alignment",
    Category.mismatch_values: "precision-alignment",
    Category.nan_or_inf: "precision-alignment",
    Category.input_mutation: "kernel-rules",
    Category.nondeterministic: "kernel-rules",
    Category.input_independent: "kernel-rules",
    Category.below_physical_floor: "kernel-rules",
    Category.heldout_failure: "kernel-rules",
    Category.regression: "reading-the-profile",
    Category.no_gain: "reading-the-profile",
}


def stage_of(category: Category | str) -> str:
    """The pipeline stage a category belongs to."""
    cat = Category(category)
    return next(stage for stage, cats in STAGES.items() if cat in cats)
