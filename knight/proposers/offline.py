"""The offline proposer: tunes a kernel's declared knobs, ranked by what the database remembers.

It needs no model and no network, so it is the default without an API key and the control
baseline for any model. Each iteration it enumerates the moves from the champion (every
single-knob change, then pairs once all singles were tried), drops moves whose resulting source
was already evaluated, and proposes the best by an experience-weighted UCB score plus a
bottleneck bonus; ties are broken by a `random.Random(seed ^ iteration)`. See
docs/offline-proposer.md.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from knight.failure import Category, Failure
from knight.proposal import Edit, Proposal
from knight.proposers.base import KnobStat, ProposalContext, ProposalResult
from knight.source import source_hash
from knight.tunables import Knob, knob_edits, read_knobs

if TYPE_CHECKING:
    from knight.proposers.tpe import TPESearch

STRATEGIES = ("bandit", "tpe")  # how the next knob move is chosen (docs/offline-proposer.md)
DEFAULT_STRATEGY = "bandit"  # it beat TPE over the suite, and resumes exactly (docs)
EXPLORE_C = 0.5  # weight of the UCB exploration term
REJECT_WEIGHT = 0.5  # a rejection (regression, no gain) costs half as much as a failure
BOTTLENECK_BONUS = 0.5  # a profile word in the one-line bottleneck verdict
SUMMARY_BONUS = 0.2  # ... or only elsewhere in the profile summary (weaker evidence)

# Profile word (matched in lower case) -> knob-name keywords it points at, and which changes of
# such a knob address it: "larger" (a numeric increase), "dma" (the knob's name or comment
# mentions DMA: it picks a DMA queue), "off" (the knob currently holds that engine and leaves it).
# Why: a DMA-latency-bound kernel pays a fixed cost per transfer, so fewer, larger transfers or
# more DMA queues help; more buffers let transfers overlap compute; a busy engine sheds work.
Row = tuple[str, tuple[str, ...], str]  # (profile word, knob-name keywords, wanted change)
KEYWORD_TABLE: tuple[Row, ...] = (
    ("dma-latency-bound", ("PER_DMA", "TILE", "COLS"), "larger"),
    ("dma-latency-bound", ("ENGINE", "QUEUE"), "dma"),
    ("dma-bound", ("BUFFERS",), "larger"),
    ("dma-bound", ("ENGINE", "QUEUE"), "dma"),
    ("fixed latency", ("PER_DMA", "TILE", "COLS"), "larger"),
    ("small", ("PER_DMA", "TILE", "COLS"), "larger"),
    ("descriptor", ("PER_DMA", "TILE"), "larger"),
    ("queue", ("ENGINE", "QUEUE"), "dma"),
    ("buffer", ("BUFFERS",), "larger"),
    ("overlap", ("BUFFERS",), "larger"),
    ("vector", ("ENGINE",), "off"),
    ("scalar", ("ENGINE",), "off"),
    ("gpsimd", ("ENGINE",), "off"),
)
# Summary lines that list every engine, DMA bucket or hot line whatever binds: their words
# would reward the same knobs on every kernel, so they are not evidence.
TABLE_LINES = ("latency", "engines", "dma", "desc", "lines")

Change = tuple[str, Any, Any]  # (knob, old value, new value)


@dataclass(frozen=True)
class Move:
    """One or two knob changes from the champion, with their edits and resulting hash."""

    changes: tuple[Change, ...]
    edits: tuple[Edit, ...]
    hash: str


@dataclass(frozen=True)
class ScoredMove:
    """A move with its score, the tie-break draw and the reasons behind the score."""

    move: Move
    score: float
    tiebreak: float
    reasons: tuple[str, ...]


class OfflineProposer:
    """Knob tuning, experience-weighted and deterministic for a seed."""

    name = "offline"

    def __init__(self, seed: int = 0, strategy: str = DEFAULT_STRATEGY) -> None:
        """`strategy`: "bandit" (moves ranked by UCB) or "tpe" (Optuna's TPE); see STRATEGIES."""
        if strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        self.seed, self.strategy = seed, strategy
        self._tpe: TPESearch | None = None
        if strategy == "tpe":
            from knight.proposers.tpe import TPESearch  # Optuna loads only for this strategy

            self._tpe = TPESearch(seed)

    def propose(self, ctx: ProposalContext) -> ProposalResult:
        """The strategy's untried knob move from the champion, or an exhausted result if none."""
        knobs = _editable_knobs(ctx)
        if self._tpe is not None and knobs:
            move = self._tpe_move(ctx, knobs)
            if move is not None:
                return ProposalResult(proposal=_tpe_proposal(knobs, move, self.seed))
        # The bandit, also when TPE drew only tried configurations (a nearly exhausted space).
        singles = enumerate_moves(ctx, knobs, size=1)
        untried = [m for m in singles if m.hash not in ctx.tried_hashes]
        pairs: list[Move] = []
        if not untried:
            pairs = enumerate_moves(ctx, knobs, size=2)
            untried = [m for m in pairs if m.hash not in ctx.tried_hashes]
        if not untried:
            tried = len(singles) + len(pairs)
            return ProposalResult.failed(
                Category.proposer_error,
                f"offline proposer: search space exhausted ({tried} moves tried)",
                exhausted=True,
            )
        # Concurrent calls from one parent (a parallel round, where each call has a focus) share
        # one ranking, tie-breaks drawn from the parent's hash, and take its next-ranked moves.
        draw = ctx.iteration if ctx.focus is None else int(ctx.champion_hash[:8], 16)
        ranked = rank_moves(ctx, knobs, untried, random.Random(self.seed ^ draw))
        pick = ranked[min(ctx.sibling, len(ranked) - 1)]
        return ProposalResult(proposal=_proposal(ctx, knobs, pick, len(untried)))

    def fix(self, ctx: ProposalContext, failure: Failure) -> ProposalResult | None:
        """None: knob edits are exact, so a failure is a real result, not a typo to correct."""
        return None

    def _tpe_move(self, ctx: ProposalContext, knobs: dict[str, Knob]) -> Move | None:
        """The move to TPE's first sampled configuration whose kernel is untried."""
        assert self._tpe is not None
        moves: dict[str, Move] = {}

        def untried(config: dict[str, Any]) -> bool:
            changes = tuple(
                (name, knobs[name].value, new)
                for name, new in sorted(config.items())
                if not _same(new, knobs[name].value)
            )
            move = _move(ctx, changes)
            moves[config_key(config)] = move
            return bool(move.edits) and move.hash not in ctx.tried_hashes

        config = self._tpe.choose(ctx, knobs, untried)
        return None if config is None else moves[config_key(config)]


def _editable_knobs(ctx: ProposalContext) -> dict[str, Knob]:
    """The context's knobs whose assignment line occurs exactly once in the champion."""
    declared = read_knobs(ctx.champion_source)
    return {
        name: declared[name]
        for name in sorted(ctx.knob_choices)
        if name in declared and ctx.champion_source.count(declared[name].line) == 1
    }


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same type (so True is not 1 and 1 is not 1.0)."""
    return type(a) is type(b) and a == b


def enumerate_moves(ctx: ProposalContext, knobs: dict[str, Knob], size: int) -> list[Move]:
    """Every change of `size` distinct knobs to other allowed values, in a stable order."""
    options: list[list[Change]] = []
    for name in sorted(knobs):
        old = knobs[name].value  # the champion's own text, which the edits must match
        allowed = [v for v in ctx.knob_choices[name] if v in knobs[name].allowed]
        options.append([(name, old, v) for v in allowed if not _same(v, old)])
    moves: list[Move] = []
    for group in itertools.combinations(options, size):
        for changes in itertools.product(*group):
            move = _move(ctx, changes)
            if move.edits and move.hash != ctx.champion_hash:  # e.g. 1 -> 1.0 changes nothing
                moves.append(move)
    return moves


def _move(ctx: ProposalContext, changes: tuple[Change, ...]) -> Move:
    """The edits for `changes` and the hash of the champion with them applied as plain text."""
    edits = knob_edits(
        ctx.champion_source, {name: new for name, _, new in changes}, ctx.kernel_file
    )
    source = ctx.champion_source
    for edit in edits:
        source = source.replace(edit.search, edit.replace, 1)  # the knob line occurs once
    return Move(changes=changes, edits=tuple(edits), hash=source_hash(source))


def value_score(stat: KnobStat | None, total_tried: int) -> tuple[float, str]:
    """UCB score of setting a knob to a value: its record plus an exploration bonus."""
    n = stat.tried if stat else 0
    explore = EXPLORE_C * math.sqrt(math.log(total_tried + 2) / (n + 1))
    if stat is None or n == 0:
        return explore, f"untried (exploration {explore:.2f})"
    rejected = max(0, n - stat.accepted - stat.failed)
    exploit = (stat.accepted - stat.failed - REJECT_WEIGHT * rejected) / n
    best = stat.best_speedup_vs_parent
    if best is not None and best > 0:
        exploit += math.log2(best)
    record = f"tried {n}, accepted {stat.accepted}, failed {stat.failed}"
    if best is not None:
        record += f", best x{best:.3f}"
    return exploit + explore, f"{record} (record {exploit:+.2f}, exploration {explore:.2f})"


def profile_hits(ctx: ProposalContext) -> tuple[list[Row], list[Row]]:
    """Keyword-table rows whose word is in the bottleneck line, and those only in the summary."""
    verdict = ctx.bottleneck.lower()
    summary = "\n".join(
        line
        for line in ctx.profile_summary.lower().splitlines()
        if not line.startswith(TABLE_LINES)
    )
    strong = [row for row in KEYWORD_TABLE if row[0] in verdict]
    weak = [row for row in KEYWORD_TABLE if row[0] not in verdict and row[0] in summary]
    return strong, weak


def _addresses(knob: Knob, change: Change, wants: str, word: str) -> bool:
    """Whether `change` moves `knob` the way a table row asks."""
    _, old, new = change
    if wants == "larger":
        numeric = isinstance(old, int | float) and isinstance(new, int | float)
        return numeric and not isinstance(old, bool) and new > old
    if wants == "dma":
        return "DMA" in knob.line.upper()  # the name or the comment says it drives DMAs
    if wants == "off":
        return _same(old, word)
    return True


def _matching_words(knob: Knob, change: Change, rows: list[Row]) -> list[str]:
    """The profile words of `rows` that this change addresses, without repeats."""
    words: list[str] = []
    for word, keywords, wants in rows:
        if word in words or not any(k in knob.name.upper() for k in keywords):
            continue
        if _addresses(knob, change, wants, word):
            words.append(word)
    return words


def bottleneck_bonus(
    knob: Knob, change: Change, strong: list[Row], weak: list[Row]
) -> tuple[float, str | None]:
    """The bonus for a change that addresses what the profile reports, and the words behind it."""
    if words := _matching_words(knob, change, strong):
        return BOTTLENECK_BONUS, f"bottleneck mentions {', '.join(repr(w) for w in words)}"
    if words := _matching_words(knob, change, weak):
        return SUMMARY_BONUS, f"profile mentions {', '.join(repr(w) for w in words)}"
    return 0.0, None


def rank_moves(
    ctx: ProposalContext, knobs: dict[str, Knob], moves: list[Move], rng: random.Random
) -> list[ScoredMove]:
    """Moves best first: score descending, then the seeded random draw."""
    total = sum(
        ctx.knob_stats[key].tried for key in sorted(ctx.knob_stats) if key[0] in ctx.knob_choices
    )
    strong, weak = profile_hits(ctx)
    scored = []
    for move in moves:
        score, reasons = 0.0, []
        for change in move.changes:
            name, _, new = change
            value, why = value_score(ctx.knob_stats.get((name, repr(new))), total)
            bonus, why_bonus = bottleneck_bonus(knobs[name], change, strong, weak)
            score += value + bonus
            reasons.append(
                f"{name}={new!r}: {why}" + (f"; {why_bonus} (+{bonus:.2f})" if why_bonus else "")
            )
        scored.append(ScoredMove(move, round(score, 9), rng.random(), tuple(reasons)))
    return sorted(scored, key=lambda s: (-s.score, s.tiebreak))


def _describe(knob: Knob) -> str:
    """The knob's trailing comment (what it controls), or its name alone."""
    _, _, rest = knob.line.partition("=")
    comment = rest.split("#", 1)[1].strip() if "#" in rest else ""
    return f"{knob.name} ({comment})" if comment else knob.name


def mechanism(name: str, old: Any, new: Any) -> str:
    """The effect a change is expected to have, from the knob's name and the direction."""
    upper = name.upper()
    more = isinstance(old, int | float) and isinstance(new, int | float) and new > old
    if "PER_DMA" in upper:
        return (
            "fewer, larger transfers pay the fixed per-DMA latency fewer times"
            if more
            else "smaller transfers let compute start on the first tile sooner"
        )
    if "BUFFERS" in upper:
        return (
            "the next transfer can land in a free buffer while compute uses the current one"
            if more
            else "fewer buffers free on-chip memory and shorten the rotation"
        )
    if "ENGINE" in upper or "QUEUE" in upper:
        return f"the work moves off the {old} engine's queue, so it can run in parallel with what stays there"
    if "COLS" in upper or "TILE" in upper:
        return (
            "fewer, larger steps pay per-instruction and per-DMA fixed costs fewer times"
            if more
            else "smaller steps pipeline loads, compute and stores more finely"
        )
    return "tests whether this setting lies on the critical path"


def hypothesis(knobs: dict[str, Knob], changes: tuple[Change, ...]) -> str:
    """One sentence naming each knob, old -> new value and the expected mechanism."""
    parts = [f"{_describe(knobs[name])} from {old!r} to {new!r}" for name, old, new in changes]
    effects = "; ".join(mechanism(name, old, new) for name, old, new in changes)
    if len(changes) == 1:
        return f"Set {parts[0]}: {effects}."
    return f"Set {' and '.join(parts)} together, since every single change was tried: {effects}."


def _proposal(
    ctx: ProposalContext, knobs: dict[str, Knob], best: ScoredMove, n_untried: int
) -> Proposal:
    """The proposal for the best move, with the statistics and profile words behind it."""
    changes = best.move.changes
    kind = "single-knob" if len(changes) == 1 else "knob-pair"
    rationale = (
        f"Offline proposer: best of {n_untried} untried {kind} moves from the champion, "
        f"score {best.score:.3f} ({' | '.join(best.reasons)})"
    )
    return Proposal(
        hypothesis=hypothesis(knobs, changes),
        rationale=rationale,
        tags=["knob", *[name for name, _, _ in changes]]
        + ([] if len(changes) == 1 else ["knob-pair"]),
        edits=list(best.move.edits),
    )


def config_key(config: dict[str, Any]) -> str:
    """A stable key for a knob configuration (sorted names, repr of values)."""
    return ";".join(f"{name}={config[name]!r}" for name in sorted(config))


def _tpe_proposal(knobs: dict[str, Knob], move: Move, seed: int) -> Proposal:
    """The proposal for a TPE-sampled configuration (one or more knob changes)."""
    changes = move.changes
    parts = [f"{_describe(knobs[name])} from {old!r} to {new!r}" for name, old, new in changes]
    effects = "; ".join(mechanism(name, old, new) for name, old, new in changes)
    return Proposal(
        hypothesis=f"Set {' and '.join(parts)}: {effects}.",
        rationale=(
            f"Offline proposer (strategy tpe): Optuna TPE sample (seed {seed}) over "
            f"{len(knobs)} knobs, {len(changes)} changed from the champion"
        ),
        tags=["knob", *[name for name, _, _ in changes], "tpe"],
        edits=list(move.edits),
    )
