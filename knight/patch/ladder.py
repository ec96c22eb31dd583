"""Applying a proposal's search/replace edits to kernel sources.

Each edit climbs a ladder of ever looser matching and is applied by the first rung that finds
exactly one place for it:

1. exact        the SEARCH text occurs once, verbatim (a SEARCH that begins with indentation
                must begin at a line start);
2. whitespace   line by line, ignoring trailing whitespace, runs of spaces/tabs inside a line,
                CRLF versus LF and blank lines at the edges of the block;
3. indentation  as (2), after shifting the whole block by one uniform indentation offset; the
                REPLACE lines are shifted by the same offset;
4. fuzzy        the only window of the file very similar to the block whose first and last
                lines closely match the block's (anchored); REPLACE is re-indented if needed.

A rung that finds more than one place stops the ladder with `patch_ambiguous`: Knight never
guesses between places. On rungs 2-4, REPLACE lines that repeat a SEARCH line unchanged are
context: the file keeps its own text for them, not the proposer's recollection of it.

Any failure rejects every edit of the proposal; the `PatchError` carries what a proposer needs
to fix its edit (the nearest real lines, or every place that matched).
"""

from __future__ import annotations

import difflib
import os
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from knight.failure import Category, Failure
from knight.proposal import Edit
from knight.source import canonical_source

Rung = Literal["exact", "whitespace", "indentation", "fuzzy"]

FUZZY_MIN_RATIO = 0.9  # a window must be at least this similar to the SEARCH block
ANCHOR_MIN_RATIO = 0.8  # ... and its first and last lines at least this similar to the block's
FUZZY_MARGIN = 0.05  # a rival window within this margin of the best makes the edit ambiguous
NEAREST_COUNT = 3  # snippets reported with patch_no_match
NEAREST_MIN_RATIO = 0.5  # ... placed around file lines at least this similar to a SEARCH line
NEAREST_SEEDS = 6  # ... at most this many per SEARCH line


class PatchError(Exception):
    """An edit that cannot be applied; `failure` is its patch-stage `Failure`.

    `failure.edit_index` is the 0-based position of the edit in the proposal (None when the
    failure concerns the patch as a whole). `failure.details` holds `nearest` snippets for
    patch_no_match and `places` (1-based line numbers) for patch_ambiguous.
    """

    def __init__(
        self,
        category: Category | str,
        message: str,
        *,
        edit_index: int | None = None,
        file: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.failure = Failure(
            category=Category(category),
            message=message,
            edit_index=edit_index,
            file=file,
            details=details or {},
        )

    @property
    def category(self) -> Category:
        """The failure's category (patch stage)."""
        return self.failure.category

    @property
    def message(self) -> str:
        """The failure's one-sentence explanation."""
        return self.failure.message


@dataclass
class AppliedPatch:
    """The result of applying every edit of a proposal."""

    files: dict[str, str]  # new contents of every file, changed or not
    rungs: list[str]  # per edit, the rung that applied it
    diff: str  # unified diff of the changed files, a/<file> b/<file>


@dataclass(frozen=True)
class _Match:
    """A place in a file: lines [start, stop), and the indentation shift (remove, add) to apply
    to REPLACE lines so they sit at the file's depth."""

    start: int
    stop: int
    shift: tuple[str, str] = ("", "")


@dataclass(frozen=True)
class _Block:
    """An edit's SEARCH and REPLACE as lines (no line endings), blank edge lines of SEARCH removed
    (and as many blank edge lines of REPLACE, which are the same context)."""

    search: list[str]
    replace: list[str]


# --- public API -------------------------------------------------------------------------------


def apply_edits(
    files: Mapping[str, str], edits: Sequence[Edit], editable: Collection[str]
) -> AppliedPatch:
    """Apply `edits` in order, each to the result of the previous; all of them or none.

    Raises PatchError on the first edit that cannot be applied, and `patch_noop` when the edits
    leave every file canonically unchanged. `files` is never mutated.
    """
    allowed = {path for path in map(_normalise_path, editable) if path is not None}
    keys = {path: name for name in files if (path := _normalise_path(name)) is not None}
    current = dict(files)
    rungs: list[str] = []
    for index, edit in enumerate(edits):
        name = _resolve_file(edit.file, allowed, keys, index)
        current[name], rung = _apply_edit(current[name], edit, index)
        rungs.append(rung)
    if all(canonical_source(current[name]) == canonical_source(files[name]) for name in files):
        raise PatchError(
            "patch_noop",
            "the edits leave every file unchanged",
            details={"edits": len(edits)},
        )
    return AppliedPatch(files=current, rungs=rungs, diff=render_diff(files, current))


def render_diff(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    """Unified diff (3 lines of context) of every file whose text changed."""
    chunks: list[str] = []
    for name, old in before.items():
        new = after[name]
        if old == new:
            continue
        hunks = difflib.unified_diff(
            _split_lines(old), _split_lines(new), f"a/{name}", f"b/{name}", n=3
        )
        chunks.extend(_mark_missing_newline(line) for line in hunks)
    return "".join(chunks)


# --- one edit ---------------------------------------------------------------------------------


def _apply_edit(text: str, edit: Edit, index: int) -> tuple[str, Rung]:
    """The file text after one edit, and the rung that applied it."""
    if not edit.search:
        raise PatchError(
            "patch_no_match",
            "an empty SEARCH text is not allowed",
            edit_index=index,
            file=edit.file,
        )
    occurrences = _exact_occurrences(text, edit.search)
    if len(occurrences) == 1:
        return _replace_exact(text, occurrences[0], edit), "exact"
    if len(occurrences) > 1:
        places = [text.count("\n", 0, pos) + 1 for pos in occurrences]
        raise _ambiguous(edit, index, "exact", places)

    lines = _split_lines(text)
    block = _block(edit)
    if not block.search:
        raise PatchError(
            "patch_no_match",
            "the SEARCH text has only blank lines and was not found verbatim",
            edit_index=index,
            file=edit.file,
        )
    finders = (
        ("whitespace", _whitespace_matches),
        ("indentation", _indentation_matches),
        ("fuzzy", _fuzzy_matches),
    )
    for rung, finder in finders:
        found = finder(lines, block.search)
        if len(found) == 1:
            return _splice(lines, found[0], block), rung
        if len(found) > 1:
            raise _ambiguous(edit, index, rung, [match.start + 1 for match in found])
    raise PatchError(
        "patch_no_match",
        "the SEARCH text was not found (tried exact, whitespace-insensitive, re-indented and "
        "fuzzy matching)",
        edit_index=index,
        file=edit.file,
        details={"nearest": _nearest(lines, block.search)},
    )


def _ambiguous(edit: Edit, index: int, rung: Rung, places: list[int]) -> PatchError:
    """`places`: the 1-based first line of every match (several matches may share a line)."""
    lines = sorted(set(places))
    return PatchError(
        "patch_ambiguous",
        f"the SEARCH text matches {len(places)} places (lines {', '.join(map(str, lines))})",
        edit_index=index,
        file=edit.file,
        details={"places": lines, "rung": rung},
    )


def _exact_occurrences(text: str, search: str) -> list[int]:
    """Offsets where SEARCH occurs verbatim. A SEARCH that begins with indentation must begin at
    a line start: found inside deeper indentation, it is a block written at another depth, which
    the indentation rung re-indents."""
    found = _find_all(text, search)
    if search[0] in " \t":
        found = [pos for pos in found if not _inside_indentation(text, pos)]
    return found


def _inside_indentation(text: str, pos: int) -> bool:
    line_start = text.rfind("\n", 0, pos) + 1
    return pos > line_start and not text[line_start:pos].strip(" \t")


def _find_all(text: str, search: str) -> list[int]:
    """Start offsets of every occurrence of `search`, overlapping ones included."""
    found: list[int] = []
    pos = text.find(search)
    while pos != -1:
        found.append(pos)
        pos = text.find(search, pos + 1)
    return found


def _replace_exact(text: str, pos: int, edit: Edit) -> str:
    replace = _align_trailing_newline(edit.search, edit.replace)
    replace = replace.replace("\r\n", "\n").replace("\n", _newline_of(text))
    return text[:pos] + replace + text[pos + len(edit.search) :]


def _align_trailing_newline(search: str, replace: str) -> str:
    """REPLACE ends with a newline exactly when SEARCH does (an empty REPLACE stays empty)."""
    if not replace or search.endswith("\n") == replace.endswith("\n"):
        return replace
    return replace + "\n" if search.endswith("\n") else _strip_one_newline(replace)


# --- lines and blocks -------------------------------------------------------------------------


def _split_lines(text: str) -> list[str]:
    """Lines with their own endings ("\\n" or "\\r\\n"); only "\\n" ends a line."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    return lines + [parts[-1]] if parts[-1] else lines


def _body(line: str) -> str:
    return line.rstrip("\r\n")


def _is_blank(line: str) -> bool:
    return not line.strip()


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _key(line: str) -> tuple[str, str]:
    """What the whitespace rung compares: indentation and the normalised rest of a line."""
    return ("", "") if _is_blank(line) else (_indent(line), _rest(line))


def _rest(line: str) -> str:
    """A line without indentation or trailing whitespace, inner runs of spaces/tabs collapsed."""
    return re.sub(r"[ \t]+", " ", line.strip())


def _newline_of(text: str) -> str:
    return "\r\n" if text.count("\r\n") * 2 > text.count("\n") else "\n"


def _strip_one_newline(text: str) -> str:
    return text.removesuffix("\n").removesuffix("\r")


def _text_lines(text: str) -> list[str]:
    """An edit's text as lines without endings (an empty text has no lines)."""
    if not text:
        return []
    return _strip_one_newline(text).replace("\r\n", "\n").split("\n")


def _block(edit: Edit) -> _Block:
    search = _text_lines(edit.search)
    replace = _text_lines(edit.replace)
    lead = _count_blank(search)
    trail = _count_blank(reversed(search)) if lead < len(search) else 0
    search = search[lead : len(search) - trail]
    replace = replace[min(lead, _count_blank(replace)) :]
    replace = replace[: len(replace) - min(trail, _count_blank(reversed(replace)))]
    return _Block(search=search, replace=replace)


def _count_blank(lines: Iterable[str]) -> int:
    count = 0
    for line in lines:
        if not _is_blank(line):
            break
        count += 1
    return count


def _splice(lines: list[str], match: _Match, block: _Block) -> str:
    """The file with lines [start, stop) rewritten by the edit, in the file's line endings (the
    last line ends with one only if the replaced region's last line did)."""
    newline = "\r\n" if lines[match.start].endswith("\r\n") else "\n"
    window = [_body(line) for line in lines[match.start : match.stop]]
    new = [line + newline for line in _rewrite(block, window, match.shift)]
    if new and not lines[match.stop - 1].endswith("\n"):
        new[-1] = _body(new[-1])
    return "".join(lines[: match.start] + new + lines[match.stop :])


def _rewrite(block: _Block, window: list[str], shift: tuple[str, str]) -> list[str]:
    """REPLACE re-indented by `shift`, except that lines it keeps unchanged from SEARCH (context)
    are copied from the file as they really are, not as the proposer remembered them."""
    counterpart = _align(block.search, window)
    matcher = difflib.SequenceMatcher(None, block.search, block.replace, autojunk=False)
    new: list[str] = []
    for tag, i1, _, j1, j2 in matcher.get_opcodes():
        for offset in range(j2 - j1):
            kept = counterpart.get(i1 + offset) if tag == "equal" else None
            line = block.replace[j1 + offset]
            new.append(window[kept] if kept is not None else _shift_line(line, shift))
    return new


def _align(search: list[str], window: list[str]) -> dict[int, int]:
    """Which window line each SEARCH line stands for; lines without a clear counterpart are
    left out. Same-length blocks align line by line."""
    if len(search) == len(window):
        return {i: i for i in range(len(search))}
    pairs: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(
        None, [_rest(line) for line in search], [_rest(line) for line in window], autojunk=False
    )
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            pairs.update(zip(range(i1, i2), range(j1, j2), strict=True))
    return pairs


def _shift_line(line: str, shift: tuple[str, str]) -> str:
    remove, add = shift
    if _is_blank(line) or shift == ("", ""):
        return line
    if line.startswith(remove):
        return add + line[len(remove) :]
    return add + line.lstrip(" \t")


def _shift_between(search_line: str, file_line: str) -> tuple[str, str]:
    """The (remove, add) indentation change that takes `search_line`'s depth to `file_line`'s."""
    search_indent, file_indent = _indent(search_line), _indent(file_line)
    common = len(os.path.commonprefix([search_indent, file_indent]))
    return search_indent[common:], file_indent[common:]


# --- rungs 2-4 --------------------------------------------------------------------------------


def _whitespace_matches(lines: list[str], search: list[str]) -> list[_Match]:
    """Places where every line equals the SEARCH line up to trailing and inner whitespace."""
    wanted = [_key(line) for line in search]
    keys = [_key(line) for line in lines]
    n = len(search)
    return [
        _Match(start, start + n)
        for start in range(len(lines) - n + 1)
        if keys[start : start + n] == wanted
    ]


def _indentation_matches(lines: list[str], search: list[str]) -> list[_Match]:
    """Places where the block matches after one uniform, non-zero indentation shift."""
    n = len(search)
    found: list[_Match] = []
    for start in range(len(lines) - n + 1):
        window = [_body(line) for line in lines[start : start + n]]
        shift = _uniform_shift(search, window)
        if shift is not None and shift != ("", ""):
            found.append(_Match(start, start + n, shift))
    return found


def _uniform_shift(search: list[str], window: list[str]) -> tuple[str, str] | None:
    """The shift taking every SEARCH line to its window line, if one shift does it for all."""
    shift: tuple[str, str] | None = None
    for wanted, actual in zip(search, window, strict=True):
        if _rest(wanted) != _rest(actual):
            return None
        if _is_blank(wanted):
            continue
        shift = shift or _shift_between(wanted, actual)
        remove, add = shift
        indent = _indent(wanted)
        if not indent.startswith(remove) or add + indent[len(remove) :] != _indent(actual):
            return None
    return shift


@dataclass(frozen=True)
class _Scored:
    ratio: float
    start: int
    stop: int

    def overlaps(self, other: _Scored) -> bool:
        return self.start < other.stop and other.start < self.stop


def _fuzzy_matches(lines: list[str], search: list[str]) -> list[_Match]:
    """The one confident fuzzy place; several places when rivals are near-tied; else none.

    Candidates are anchored windows: their first and last lines are each at least
    ANCHOR_MIN_RATIO similar to the block's first and last lines, and they hold as many lines
    as the block, or one fewer, or one more.
    """
    rests = [_rest(line) for line in lines]
    ends = set(_similar_lines(search[-1], rests, ANCHOR_MIN_RATIO))
    sizes = {size for size in (len(search) - 1, len(search), len(search) + 1) if size >= 1}
    windows = [
        (start, start + size)
        for start in _similar_lines(search[0], rests, ANCHOR_MIN_RATIO)
        for size in sizes
        if start + size - 1 in ends
    ]
    ranked = _rank(windows, search, rests, floor=FUZZY_MIN_RATIO - FUZZY_MARGIN)
    if not ranked or ranked[0].ratio < FUZZY_MIN_RATIO:
        return []
    best, rivals = ranked[0], [s for s in ranked[1:] if s.ratio >= ranked[0].ratio - FUZZY_MARGIN]
    if rivals:
        return [_Match(s.start, s.stop) for s in (best, *rivals)]
    window = [_body(line) for line in lines[best.start : best.stop]]
    return [_Match(best.start, best.stop, _block_shift(search, window))]


def _block_shift(search: list[str], window: list[str]) -> tuple[str, str]:
    """The indentation change that most aligned non-blank line pairs agree on (on a tie, the
    smallest change)."""
    pairs = _align(search, window).items()
    shifts = Counter(
        _shift_between(search[i], window[j])
        for i, j in pairs
        if not _is_blank(search[i]) and not _is_blank(window[j])
    )
    if not shifts:
        return _shift_between(search[0], window[0])
    return max(shifts, key=lambda shift: (shifts[shift], -len(shift[0]) - len(shift[1])))


def _similar_lines(
    line: str, rests: list[str], cutoff: float, limit: int | None = None
) -> list[int]:
    """Indices of the file lines whose normalised text is at least `cutoff` similar to `line`'s
    (only the `limit` most similar texts, when given)."""
    texts = {rest for rest in rests if rest}
    if not texts:
        return []
    close = set(difflib.get_close_matches(_rest(line), texts, n=limit or len(texts), cutoff=cutoff))
    return [j for j, rest in enumerate(rests) if rest in close]


def _rank(
    windows: Iterable[tuple[int, int]], search: list[str], rests: list[str], floor: float
) -> list[_Scored]:
    """Windows (start, stop) by similarity to the block, best first, leaving out windows below
    `floor` and windows that overlap a better one. Indentation does not count."""
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2("\n".join(_rest(line) for line in search))
    scored: list[_Scored] = []
    for start, stop in set(windows):
        matcher.set_seq1("\n".join(rests[start:stop]))
        if matcher.real_quick_ratio() < floor or matcher.quick_ratio() < floor:
            continue
        if (ratio := matcher.ratio()) >= floor:
            scored.append(_Scored(ratio, start, stop))
    ranked: list[_Scored] = []
    for candidate in sorted(scored, key=lambda s: (-s.ratio, s.start, s.stop)):
        if not any(candidate.overlaps(better) for better in ranked):
            ranked.append(candidate)
    return ranked


def _nearest(lines: list[str], search: list[str]) -> list[dict[str, Any]]:
    """Up to NEAREST_COUNT non-overlapping windows of real lines most similar to the block. A
    window is tried wherever one of the block's lines has one of its most similar file lines."""
    rests = [_rest(line) for line in lines]
    size = min(len(search), len(lines))
    windows: set[tuple[int, int]] = set()
    for i, line in enumerate(search):
        if _is_blank(line):
            continue
        for j in _similar_lines(line, rests, NEAREST_MIN_RATIO, limit=2)[:NEAREST_SEEDS]:
            start = min(max(j - i, 0), len(lines) - size)
            windows.add((start, start + size))
    return [
        {
            "start_line": s.start + 1,
            "end_line": s.stop,
            "ratio": round(s.ratio, 3),
            "text": "\n".join(_body(line) for line in lines[s.start : s.stop]),
        }
        for s in _rank(windows, search, rests, floor=0.0)[:NEAREST_COUNT]
    ]


# --- files and paths --------------------------------------------------------------------------


def _normalise_path(path: str) -> str | None:
    """A relative POSIX path without "." parts; None for absolute paths and any ".." part."""
    path = path.strip().replace("\\", "/")
    if not path or path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return None
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _resolve_file(path: str, allowed: set[str], keys: Mapping[str, str], index: int) -> str:
    """The key in `files` that an edit's path names, if the path is editable."""
    normal = _normalise_path(path)
    if normal is None or normal not in allowed:
        reason = "is not a relative path inside the kernel" if normal is None else "is not editable"
        raise PatchError(
            "patch_outside_editable",
            f"the file {path!r} {reason}",
            edit_index=index,
            file=path,
            details={"editable": sorted(allowed)},
        )
    if normal not in keys:
        raise PatchError(
            "patch_no_match",
            f"the file {path!r} is editable but does not exist",
            edit_index=index,
            file=path,
        )
    return keys[normal]


def _mark_missing_newline(diff_line: str) -> str:
    if diff_line.endswith("\n"):
        return diff_line
    return diff_line + "\n\\ No newline at end of file\n"
