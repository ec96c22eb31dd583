"""Focus: what each concurrent proposer call of a parallel round is asked to concentrate on.

Calls of one round start from the same few parents; giving each a different focus (the
bottleneck, the latest failure to address, a skill) keeps their proposals apart. The focus is
deterministic (same context, same slot, same focus) and is recorded with the candidate.
"""

from __future__ import annotations

from knight.failure import IterationStatus
from knight.proposers import ProposalContext


def focus_options(ctx: ProposalContext) -> list[str]:
    """The directions a call may be pointed at, most pressing first."""
    options = [f"the bottleneck the profile shows ({ctx.bottleneck})"]
    failed = [a for a in ctx.recent if a.status is IterationStatus.failed and a.category]
    if failed:
        last = failed[-1]
        assert last.category is not None
        options.append(
            f"the failure of iteration {last.number} ({last.category.value}): "
            f"find a variant of '{last.hypothesis[:120]}' that avoids it"
        )
    options += [f"the technique of skill '{s.name}' ({s.description[:160]})" for s in ctx.skills]
    options += [f"the knob {name} (now {value!r})" for name, value in ctx.knobs.items()]
    options += list(GENERAL_DIRECTIONS)
    return options


# Directions that apply to any kernel, for when the context offers few specific ones.
GENERAL_DIRECTIONS = (
    "a structural change (tiling, loop order or data layout) rather than a knob value",
    "overlapping data movement with compute (more buffers, earlier loads, more DMA queues)",
    "doing less work: fewer instructions, fewer transfers, or fused steps",
)


def choose_focus(ctx: ProposalContext, slot: int, round_number: int) -> str:
    """The focus of call `slot` of round `round_number`: slot 0 takes the bottleneck; the others
    walk through the remaining options, shifted each round so skills take turns."""
    options = focus_options(ctx)
    if slot == 0 or len(options) == 1:
        return options[0]
    rest = options[1:]
    return rest[(slot - 1 + round_number) % len(rest)]
