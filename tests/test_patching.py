"""Patch application: the corpus of realistic edits, properties, and the proposal models."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from knight.failure import Stage
from knight.patch import PatchError, apply_edits
from knight.proposal import Edit, Proposal, parse_search_replace_blocks
from knight.source import canonical_source, source_hash


def _load_corpus():
    path = Path(__file__).parent / "patch_corpus" / "cases.py"
    spec = importlib.util.spec_from_file_location("patch_corpus_cases", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


corpus = _load_corpus()
KERNEL, HELPER = corpus.KERNEL, corpus.HELPER
KERNEL_TEXT, HELPER_TEXT = corpus.KERNEL_TEXT, corpus.HELPER_TEXT
EDITABLE = [KERNEL]


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def _expected_kernel(case) -> str:
    text = KERNEL_TEXT
    for old, new in case.result:
        assert text.count(old) == 1, f"{case.name}: corpus substitution is not unique: {old!r}"
        text = text.replace(old, new)
    assert text != KERNEL_TEXT, f"{case.name}: a successful case must change the kernel"
    return _crlf(text) if case.crlf else text


# --- the corpus ----------------------------------------------------------------------------


def test_corpus_is_large_enough_and_covers_every_outcome():
    assert len(KERNEL_TEXT.splitlines()) >= 80
    assert len(corpus.CASES) >= 20
    assert len({case.name for case in corpus.CASES}) == len(corpus.CASES)
    rungs = {rung for case in corpus.CASES for rung in case.rungs}
    errors = {case.error for case in corpus.CASES if case.error}
    assert rungs == {"exact", "whitespace", "indentation", "fuzzy"}
    assert errors == {"patch_no_match", "patch_ambiguous", "patch_outside_editable", "patch_noop"}


@pytest.mark.parametrize("case", corpus.CASES, ids=lambda case: case.name)
def test_corpus_case(case):
    files = {KERNEL: _crlf(KERNEL_TEXT) if case.crlf else KERNEL_TEXT, HELPER: HELPER_TEXT}
    before = dict(files)
    edits = [
        Edit(file=file, search=search, replace=replace) for file, search, replace in case.edits
    ]

    if case.error is None:
        applied = apply_edits(files, edits, EDITABLE)
        assert applied.rungs == list(case.rungs)
        assert applied.files[KERNEL] == _expected_kernel(case)
        assert applied.files[HELPER] == HELPER_TEXT
    else:
        with pytest.raises(PatchError) as info:
            apply_edits(files, edits, EDITABLE)
        err = info.value
        assert err.category == case.error, err.message
        assert err.failure.edit_index == case.error_edit
        assert case.message in err.message
        if case.error == "patch_ambiguous":
            assert err.failure.details["places"] == list(case.lines)
            assert err.failure.details["rung"] == case.rungs[0]
        if case.error == "patch_no_match" and case.lines:
            first = err.failure.details["nearest"][0]
            assert all(first["start_line"] <= line <= first["end_line"] for line in case.lines)
            real = KERNEL_TEXT.splitlines()[first["start_line"] - 1 : first["end_line"]]
            assert first["text"] == "\n".join(real)
        assert err.failure.stage is Stage.patch and err.failure.hint == "patching"
        json.dumps(err.failure.model_dump(mode="json"))  # serialisable for the store
    assert files == before  # the input is never mutated


# --- properties ----------------------------------------------------------------------------

LINES = KERNEL_TEXT.split("\n")[:-1]
MARKER = "knight_marker = 0"


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _ws_key(line: str) -> tuple[str, str]:
    return (_indent_of(line), " ".join(line.split())) if line.strip() else ("", "")


def _structure(block: list[str]) -> tuple[tuple[int, str], ...]:
    """A block's lines up to whitespace, with indentation relative to its shallowest line."""
    base = min((len(_indent_of(line)) for line in block if line.strip()), default=0)
    return tuple(
        (len(_indent_of(line)) - base, " ".join(line.split())) if line.strip() else (0, "")
        for line in block
    )


def _blocks(key) -> list[tuple[int, int]]:
    """(start, size) of blocks with non-blank edges whose key no other block of that size shares
    and whose text (without its final newline) occurs once in the kernel."""
    found = []
    for size in range(1, 6):
        windows = [LINES[start : start + size] for start in range(len(LINES) - size + 1)]
        keys = [key(window) for window in windows]
        for start, window in enumerate(windows):
            if not (window[0].strip() and window[-1].strip()):
                continue
            if keys.count(keys[start]) == 1 and KERNEL_TEXT.count("\n".join(window)) == 1:
                found.append((start, size))
    return found


WS_BLOCKS = _blocks(lambda window: tuple(map(_ws_key, window)))
SHIFT_BLOCKS = _blocks(_structure)


@st.composite
def _retyped(draw, block: list[str]) -> tuple[list[str], str, str]:
    """The block's lines as a proposer might retype them (trailing blanks, inner runs of spaces
    or tabs), its newline (LF or CRLF) and its ending (none, one or two newlines). The proposer
    types REPLACE with the same newline and ending."""
    lines = []
    for line in block:
        indent, rest = _indent_of(line), line.lstrip()
        words = rest.split(" ")
        seps = [draw(st.sampled_from([" ", " ", "  ", "\t", " \t "])) for _ in words[1:]]
        rest = words[0] + "".join(sep + word for sep, word in zip(seps, words[1:], strict=True))
        lines.append(indent + rest + draw(st.sampled_from(["", "", " ", "\t", "   "])))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return lines, newline, draw(st.sampled_from(["", newline, newline * 2]))


def _expected_with_marker(start: int, size: int) -> str:
    """The kernel with the block's first line kept and every other line replaced by MARKER."""
    marker = _indent_of(LINES[start]) + MARKER
    new = LINES[:start] + [LINES[start], marker] + LINES[start + size :]
    return "\n".join(new) + "\n"


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_whitespace_noise_puts_the_replacement_exactly_where_the_block_was(data):
    start, size = data.draw(st.sampled_from(WS_BLOCKS))
    block = LINES[start : start + size]
    lines, newline, ending = data.draw(_retyped(block))
    search = newline.join(lines) + ending
    replace = newline.join([lines[0], _indent_of(block[0]) + MARKER]) + ending

    applied = apply_edits(
        {KERNEL: KERNEL_TEXT}, [Edit(file=KERNEL, search=search, replace=replace)], EDITABLE
    )

    assert applied.files[KERNEL] == _expected_with_marker(start, size)
    assert applied.rungs[0] in ("exact", "whitespace")


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_indentation_shift_puts_the_replacement_exactly_where_the_block_was(data):
    start, size = data.draw(st.sampled_from(SHIFT_BLOCKS))
    block = LINES[start : start + size]
    depth = min(len(_indent_of(line)) for line in block if line.strip())
    # A block moved to column 0 is verbatim text inside the file's lines: the exact rung keeps
    # the file's indentation for its first line only (see the dropped-indent corpus case).
    allowed = [c for c in (-8, -4, 4, 8) if depth + c >= 0 and len(_indent_of(block[0])) + c > 0]
    columns = data.draw(st.sampled_from(allowed))
    search = corpus.shift("\n".join(block) + "\n", columns)
    replace = corpus.shift(block[0] + "\n" + _indent_of(block[0]) + MARKER + "\n", columns)

    applied = apply_edits(
        {KERNEL: KERNEL_TEXT}, [Edit(file=KERNEL, search=search, replace=replace)], EDITABLE
    )

    assert applied.files[KERNEL] == _expected_with_marker(start, size)
    assert applied.rungs[0] == "indentation"


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_one_character_drift_in_a_middle_line_is_applied_in_place(data):
    start, size = data.draw(st.sampled_from([b for b in WS_BLOCKS if b[1] >= 3]))
    block = LINES[start : start + size]
    row = data.draw(st.integers(1, size - 2))
    assume(block[row].strip())
    col = data.draw(st.integers(len(_indent_of(block[row])), len(block[row]) - 1))
    char = data.draw(st.sampled_from("abxyz019_(),.:"))
    drifted = [*block[:row], block[row][:col] + char + block[row][col + 1 :], *block[row + 1 :]]
    search = "\n".join(drifted) + "\n"
    replace = search + _indent_of(block[0]) + MARKER + "\n"  # every SEARCH line is context

    applied = apply_edits(
        {KERNEL: KERNEL_TEXT}, [Edit(file=KERNEL, search=search, replace=replace)], EDITABLE
    )

    end = start + size
    expected = [*LINES[:end], _indent_of(block[0]) + MARKER, *LINES[end:]]
    assert applied.files[KERNEL] == "\n".join(expected) + "\n"  # the file's own lines kept
    assert applied.rungs[0] in ("exact", "fuzzy")


def test_property_pools_are_not_trivial():
    assert len(WS_BLOCKS) > 100
    assert any(size >= 3 for _, size in SHIFT_BLOCKS)
    assert len(SHIFT_BLOCKS) > 100
    assert any(size >= 3 and _indent_of(LINES[start]) == " " * 12 for start, size in SHIFT_BLOCKS)


# --- other behaviour of apply_edits --------------------------------------------------------


def test_edits_across_two_files_and_the_diff():
    files = {KERNEL: KERNEL_TEXT, HELPER: HELPER_TEXT}
    edits = [
        Edit(file=KERNEL, search="BUFS = 2\n", replace="BUFS = 3\n"),
        Edit(file=HELPER, search="nearest_even", replace="toward_zero"),
    ]
    applied = apply_edits(files, edits, [KERNEL, HELPER])
    assert applied.files[HELPER] == 'ROUNDING = "toward_zero"\n'
    diff = applied.diff
    assert diff.count("--- a/") == 2
    assert f"--- a/{KERNEL}\n+++ b/{KERNEL}\n@@ -5,7 +5,7 @@\n" in diff
    assert " TILE_F = 512\n-BUFS = 2\n+BUFS = 3\n \n" in diff
    assert f"--- a/{HELPER}\n+++ b/{HELPER}\n" in diff


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_diff_applies_with_git(tmp_path):
    text = KERNEL_TEXT.rstrip("\n")  # also exercise a last line without a newline
    files = {KERNEL: text}
    last = text.split("\n")[-1]
    edits = [
        Edit(file=KERNEL, search="BUFS = 2\n", replace="BUFS = 3\n"),
        Edit(file=KERNEL, search=last, replace="        # no down tiles\n" + last),
    ]
    applied = apply_edits(files, edits, [KERNEL])
    assert applied.files[KERNEL].endswith(last)
    assert "\\ No newline at end of file\n" in applied.diff
    (tmp_path / "kernels").mkdir()
    (tmp_path / KERNEL).write_text(text)
    (tmp_path / "change.diff").write_text(applied.diff)
    subprocess.run(["git", "apply", "change.diff"], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / KERNEL).read_text() == applied.files[KERNEL]


def test_no_edits_is_a_noop():
    with pytest.raises(PatchError) as info:
        apply_edits({KERNEL: KERNEL_TEXT}, [], EDITABLE)
    assert info.value.category == "patch_noop"


def test_editable_but_missing_file_is_no_match():
    edit = Edit(file="kernels/new.py", search="x", replace="y")
    with pytest.raises(PatchError) as info:
        apply_edits({KERNEL: KERNEL_TEXT}, [edit], [KERNEL, "kernels/new.py"])
    assert info.value.category == "patch_no_match"
    assert "does not exist" in info.value.message


def test_a_patch_failure_explains_itself_for_a_fix_round():
    edits = [
        Edit(file=KERNEL, search="BUFS = 2\n", replace="BUFS = 3\n"),
        Edit(
            file=KERNEL, search="        nisa.tensor_copy(dst=out_sb, src=out_ps)\n", replace="X\n"
        ),
    ]
    with pytest.raises(PatchError) as info:
        apply_edits({KERNEL: KERNEL_TEXT}, edits, EDITABLE)
    text = info.value.failure.for_proposer()
    assert text.startswith(f"Edit 2 on {KERNEL}: the SEARCH text was not found")
    assert "Nearest lines" in text
    assert "  63 |             nisa.tensor_copy(dst=out_sb[:, part], src=out_ps[:, part])" in text

    with pytest.raises(PatchError) as info:
        apply_edits({KERNEL: KERNEL_TEXT}, [Edit(file="x.py", search="a", replace="b")], EDITABLE)
    assert f"Editable files: {KERNEL}." in info.value.failure.for_proposer()


# --- canonical source ----------------------------------------------------------------------


def test_canonical_source_ignores_line_endings_and_trailing_blanks():
    messy = "def f():  \r\n    return 1\t\r\n\r\n\r\n"
    assert canonical_source(messy) == "def f():\n    return 1\n"
    assert canonical_source("x = 1") == "x = 1\n"
    assert source_hash(messy) == source_hash("def f():\n    return 1\n")
    assert source_hash(messy) != source_hash("def f():\n    return 2\n")
    assert re.fullmatch(r"[0-9a-f]{64}", source_hash(messy))


def test_canonical_source_keeps_indentation_and_inner_blank_lines():
    assert canonical_source("a\n\n\n  b\n") == "a\n\n\n  b\n"
    assert source_hash("  b\n") != source_hash("b\n")


# --- proposal models and block parsing -----------------------------------------------------


def test_proposal_validation():
    edit = Edit(file=KERNEL, search="a", replace="b")
    proposal = Proposal(hypothesis="  Double buffering hides DMA latency.  ", edits=[edit])
    assert proposal.hypothesis == "Double buffering hides DMA latency."
    knobs = Proposal(
        hypothesis="h", knobs={"BUFS": 3, "FUSE": True, "SCALE": 0.5, "MODE": "a"}
    ).knobs
    assert knobs == {"BUFS": 3, "FUSE": True, "SCALE": 0.5, "MODE": "a"}
    assert type(knobs["BUFS"]) is int and type(knobs["FUSE"]) is bool
    with pytest.raises(ValidationError, match="non-empty"):
        Proposal(hypothesis="   ", edits=[edit])
    with pytest.raises(ValidationError, match="at least one edit or one knob"):
        Proposal(hypothesis="h")
    with pytest.raises(ValidationError):
        Proposal(hypothesis="h", edits=[edit], confidence=0.9)
    with pytest.raises(ValidationError):
        Edit(file=KERNEL, search="a", replace="b", line=3)


def test_parse_search_replace_blocks():
    text = (
        "I will swap the loads.\n"
        "kernels/expert_mlp.py\n"
        "```python\n"
        "<<<<<<< SEARCH\n"
        "BUFS = 2\n"
        "=======\n"
        "BUFS = 3\n"
        ">>>>>>> REPLACE\n"
        "```\n"
        "\n"
        "<<<<<<< SEARCH\n"
        "TILE_F = 512\n"
        "\n"
        "=======\n"
        ">>>>>>> REPLACE\n"
    )
    edits = parse_search_replace_blocks(text, default_file="kernel.py")
    assert edits == [
        Edit(file="kernels/expert_mlp.py", search="BUFS = 2\n", replace="BUFS = 3\n"),
        Edit(file="kernel.py", search="TILE_F = 512\n\n", replace=""),
    ]
    assert parse_search_replace_blocks("no blocks here", "k.py") == []


@pytest.mark.parametrize(
    "text",
    [
        "<<<<<<< SEARCH\na\n",
        "<<<<<<< SEARCH\na\n=======\nb\n",
        "<<<<<<< SEARCH\na\n=======\nb\n<<<<<<< SEARCH\nc\n=======\nd\n>>>>>>> REPLACE\n",
        "a\n=======\nb\n>>>>>>> REPLACE\n",
    ],
)
def test_parse_rejects_malformed_blocks(text):
    with pytest.raises(ValueError, match="SEARCH"):
        parse_search_replace_blocks(text, "k.py")
