"""The beam: the K best distinct kernels of a run, from which each round draws its parents.

K = 1 keeps only the champion (a linear run). Wider beams make the lineage a tree: every
candidate records the iteration that produced its parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from knight.agent.context import Champion


@dataclass
class Beam:
    """Up to `width` kernels, best (lowest score) first; a kernel is in it at most once."""

    width: int
    members: list[Champion] = field(default_factory=list)

    def offer(self, kernel: Champion) -> bool:
        """Add `kernel` if it ranks among the best `width`; return whether it entered."""
        if any(m.hash == kernel.hash for m in self.members):
            return False
        ranked = sorted([*self.members, kernel], key=_rank)
        self.members = ranked[: self.width]
        return kernel in self.members

    @property
    def best(self) -> Champion:
        """The champion: the best kernel so far."""
        return self.members[0]

    def parents(self, n: int) -> list[tuple[Champion, int]]:
        """Parents for a round of `n` candidates, best first and round-robin over the beam, each
        with its rank among the round's candidates of the same parent."""
        return round_parents([self] * n)

    def precedes(self, number: int) -> bool:
        """Whether every member was produced before iteration `number` (the baseline always was),
        so that any member may be the parent of iteration `number`."""
        return all((m.iteration or 0) < number for m in self.members)


def round_parents(beams: list[Beam]) -> list[tuple[Champion, int]]:
    """The parents of a round whose call `i` draws from `beams[i]`: member `i mod width` of its
    beam, with its rank among the round's earlier calls from the same parent (one beam for the
    whole round in a running session; a resumed round refilling the numbers a killed round left
    empty gives each such number the beam of the kernels recorded before it)."""
    parents: list[tuple[Champion, int]] = []
    for i, beam in enumerate(beams):
        parent = beam.members[i % len(beam.members)]
        rank = sum(1 for earlier, _ in parents if earlier.hash == parent.hash)
        parents.append((parent, rank))
    return parents


def _rank(kernel: Champion) -> tuple[float, int]:
    # Ties go to the older kernel, so a resumed run rebuilds the same beam.
    return kernel.score_ns, kernel.iteration or 0
