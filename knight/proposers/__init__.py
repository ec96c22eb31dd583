"""Proposers: where hypotheses and patches come from (offline, scripted, Claude, a command)."""

from knight.proposers.base import (
    Attempt,
    KnobStat,
    ProposalContext,
    ProposalResult,
    Proposer,
    ProposerUnavailable,
    SkillSummary,
    WorkloadView,
)

__all__ = [
    "Attempt",
    "KnobStat",
    "ProposalContext",
    "ProposalResult",
    "Proposer",
    "ProposerUnavailable",
    "SkillSummary",
    "WorkloadView",
]
