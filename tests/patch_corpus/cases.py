"""Patch corpus: edits a proposer might send against `expert_mlp.py.txt`, and what must happen.

A case lists its edits, then either the rung expected to apply each edit and the exact
substitutions that turn the original kernel into the expected result, or the expected error
category (with every ambiguous place, or a line the nearest snippet must show).

The kernel is stored as `.py.txt` so that formatters and linters leave its bytes alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KERNEL = "kernels/expert_mlp.py"
HELPER = "kernels/common.py"  # present in the candidate, but not editable
KERNEL_TEXT = (Path(__file__).parent / "expert_mlp.py.txt").read_bytes().decode("utf-8")
HELPER_TEXT = 'ROUNDING = "nearest_even"\n'
_LINES = KERNEL_TEXT.splitlines(keepends=True)


def L(first: int, last: int | None = None) -> str:
    """Lines first..last (1-based, inclusive) of the kernel, verbatim."""
    return "".join(_LINES[first - 1 : (last or first)])


def trailing(text: str, pad: str = "  ") -> str:
    """`text` with `pad` added at the end of every line."""
    return text.replace("\n", pad + "\n")


def shift(text: str, columns: int) -> str:
    """`text` with every non-blank line indented `columns` more (or less, if negative)."""
    lines = text.split("\n")
    if columns >= 0:
        return "\n".join(" " * columns + line if line.strip() else line for line in lines)
    return "\n".join(line[-columns:] if line.strip() else line for line in lines)


@dataclass(frozen=True)
class Case:
    """One proposal's edits and the expected outcome.

    rungs:   per edit, the rung that applies it (for patch_ambiguous: the rung that found
             several places);
    result:  (old, new) substitutions on the original kernel giving the expected file; each old
             text occurs exactly once;
    lines:   patch_ambiguous: every place; patch_no_match: lines the nearest snippet must show.
    """

    name: str
    edits: tuple[tuple[str, str, str], ...]  # (file, search, replace)
    rungs: tuple[str, ...] = ()
    result: tuple[tuple[str, str], ...] = ()
    error: str | None = None  # expected PatchError category
    error_edit: int | None = None  # 0-based index of the failing edit
    lines: tuple[int, ...] = ()
    crlf: bool = False  # the kernel is stored with CRLF line endings
    message: str = ""  # a phrase the error message must contain


def edit(search: str, replace: str, file: str = KERNEL) -> tuple[str, str, str]:
    return (file, search, replace)


SILU = "        nisa.activation(dst=gate, op=nl.silu, data=gate_ps)\n"
SILU_SCALED = "        nisa.activation(dst=gate, op=nl.silu, data=gate_ps, scale=1.0)\n"
GELU_DRIFT = "        nisa.activation(dst=gate, op=nl.gelu, data=gate_ps)\n"  # misremembered
DOWN_AFFINE = "        for c in nl.affine_range(inter // TILE_P):\n"
PSUM_NOTE = "        # accumulate the down projection in fp32 PSUM\n"

CASES: tuple[Case, ...] = (
    # --- rung 1: exact ---------------------------------------------------------------------
    Case(
        "exact_line",
        (edit(L(55), DOWN_AFFINE),),
        rungs=("exact",),
        result=((L(55), DOWN_AFFINE),),
    ),
    Case(
        "exact_block_swap_near_identical_dma_copies",
        (edit(L(36, 37), L(37) + L(36)),),
        rungs=("exact",),
        result=((L(36, 37), L(37) + L(36)),),
    ),
    Case(
        "exact_inside_a_line",
        (edit("dtype=nl.float32, buffer=nl.sbuf)", "dtype=nl.bfloat16, buffer=nl.sbuf)"),),
        rungs=("exact",),
        result=(("dtype=nl.float32, buffer=nl.sbuf)", "dtype=nl.bfloat16, buffer=nl.sbuf)"),),
    ),
    Case(
        # SEARCH without its final newline, REPLACE with one: no blank line may appear.
        "exact_replace_newline_follows_search",
        (edit(SILU.rstrip("\n"), SILU_SCALED),),
        rungs=("exact",),
        result=((SILU, SILU_SCALED),),
    ),
    Case(
        # The first line's indentation dropped (copied from mid-line): still verbatim text.
        "exact_first_line_indent_dropped",
        (edit(L(36, 37).lstrip(), (L(37) + L(36)).lstrip()),),
        rungs=("exact",),
        result=((L(36, 37), L(37) + L(36)),),
    ),
    Case(
        # Also found inside line 31's deeper indentation, where it is not a line start.
        "exact_indented_search_starts_a_line",
        (edit(L(24), "    for k in nl.sequential_range(n_k):\n"),),
        rungs=("exact",),
        result=((L(23, 24), L(23) + "    for k in nl.sequential_range(n_k):\n"),),
    ),
    Case(
        "exact_dot_slash_path",
        (edit("BUFS = 2\n", "BUFS = 3\n", file="./kernels/expert_mlp.py"),),
        rungs=("exact",),
        result=(("BUFS = 2\n", "BUFS = 3\n"),),
    ),
    # --- rung 2: whitespace ----------------------------------------------------------------
    Case(
        "whitespace_trailing",
        (edit(trailing(L(41) + SILU, " \t"), L(41) + SILU_SCALED),),
        rungs=("whitespace",),
        result=((SILU, SILU_SCALED),),
    ),
    Case(
        # The unchanged first line is context: the file keeps its own spacing for it.
        "whitespace_tabs_and_space_runs",
        (
            edit(
                L(29).replace("(TILE_F, tokens),", "(TILE_F,\ttokens),  ")
                + L(30).replace("nl.float32,", "nl.float32,   "),
                L(29).replace("(TILE_F, tokens),", "(TILE_F,\ttokens),  ")
                + L(30).replace("nl.float32", "nl.bfloat16"),
            ),
        ),
        rungs=("whitespace",),
        result=((L(30), L(30).replace("nl.float32", "nl.bfloat16")),),
    ),
    Case(
        "whitespace_crlf_search_in_lf_file",
        (
            edit(
                (L(60) + L(61)).replace("\n", "\r\n"),
                (L(60).replace("bfloat16", "float32") + L(61)).replace("\n", "\r\n"),
            ),
        ),
        rungs=("whitespace",),
        result=((L(60), L(60).replace("bfloat16", "float32")),),
    ),
    Case(
        "whitespace_lf_search_in_crlf_file",
        (edit(L(29, 30), L(29) + L(30).replace("up_ps", "up_acc")),),
        rungs=("whitespace",),
        result=((L(30), L(30).replace("up_ps", "up_acc")),),
        crlf=True,
    ),
    Case(
        "whitespace_extra_trailing_newline",
        (edit(L(52, 53) + "\n", "    n_h = hidden // TILE_F  # output tiles\n" + L(53) + "\n"),),
        rungs=("whitespace",),
        result=((L(52), "    n_h = hidden // TILE_F  # output tiles\n"),),
    ),
    Case(
        # Blank lines before the block that the file does not have: edge blank lines are
        # context, and REPLACE's matching blank lines are not inserted.
        "whitespace_extra_leading_blank_line",
        (edit("\n\n" + L(29, 30), "\n\n" + L(29) + L(30).replace("up_ps", "up_acc")),),
        rungs=("whitespace",),
        result=((L(30), L(30).replace("up_ps", "up_acc")),),
    ),
    Case(
        # Trailing blanks defeat exact; indentation still tells line 31 from line 24.
        "whitespace_respects_indentation",
        (edit(trailing(L(31)), "        for k in nl.sequential_range(n_k):\n"),),
        rungs=("whitespace",),
        result=((L(30, 31), L(30) + "        for k in nl.sequential_range(n_k):\n"),),
    ),
    Case(
        "whitespace_delete_lines",
        (edit(trailing(L(34, 35)), ""),),
        rungs=("whitespace",),
        result=((L(33, 36), L(33) + L(36)),),
    ),
    # --- rung 3: indentation ---------------------------------------------------------------
    Case(
        "indentation_search_too_shallow",
        (
            edit(
                shift(L(36, 37), -4),
                "        if i % 2 == 0:\n"
                + shift(L(36), 0)
                + shift(L(37), -4),  # unchanged context line, written at the shallow depth
            ),
        ),
        rungs=("indentation",),
        result=(
            (
                L(36, 37),
                "            if i % 2 == 0:\n" + shift(L(36), 4) + L(37),
            ),
        ),
    ),
    Case(
        "indentation_search_too_deep",
        (edit(shift(L(52, 54), 4), shift(L(52, 53) + PSUM_NOTE + L(54), 4)),),
        rungs=("indentation",),
        result=((L(53, 54), L(53) + PSUM_NOTE + L(54)),),
    ),
    # --- rung 4: fuzzy ---------------------------------------------------------------------
    Case(
        # The proposer misremembers silu as gelu in a context line; the context line keeps the
        # file's real text and only the intended line changes.
        "fuzzy_one_token_drift_in_context",
        (
            edit(
                L(41) + GELU_DRIFT + L(43),
                L(41).replace("nl.float32", "nl.bfloat16") + GELU_DRIFT + L(43),
            ),
        ),
        rungs=("fuzzy",),
        result=((L(41), L(41).replace("nl.float32", "nl.bfloat16")),),
    ),
    Case(
        "fuzzy_drift_at_wrong_depth",
        (
            edit(
                shift(L(38).replace("x_sb[:, k, :]", "x_sb[:, k]") + L(39), -4),
                shift(L(38).replace("x_sb[:, k, :]", "x_sb[:, k]"), -4)
                + shift(L(39).replace("x_sb[:, k, :])", "x_sb[:, k, :], acc=True)"), -4),
            ),
        ),
        rungs=("fuzzy",),
        result=((L(39), L(39).replace("x_sb[:, k, :])", "x_sb[:, k, :], acc=True)")),),
    ),
    Case(
        # First line's indentation dropped and a drifted token: the block's shift is the one
        # most lines agree on (none), not the first line's.
        "fuzzy_first_line_indent_dropped",
        (
            edit(
                L(36).lstrip() + L(37) + L(38).replace("x_sb[:, k, :]", "x_sb[:, k]") + L(39),
                L(36).lstrip()
                + L(37)
                + L(38).replace("x_sb[:, k, :]", "x_sb[:, k]")
                + L(39).replace("x_sb[:, k, :])", "x_sb[:, k, :], acc=True)"),
            ),
        ),
        rungs=("fuzzy",),
        result=((L(39), L(39).replace("x_sb[:, k, :])", "x_sb[:, k, :], acc=True)")),),
    ),
    # --- ambiguous: nothing is applied -----------------------------------------------------
    Case(
        "ambiguous_exact_three_places",
        (edit("nl.ndarray((TILE_P, TILE_F), dtype=nl.bfloat16, buffer=nl.sbuf)\n", "X\n"),),
        rungs=("exact",),
        error="patch_ambiguous",
        error_edit=0,
        lines=(32, 33, 56),
    ),
    Case(
        "ambiguous_whitespace_repeated_loop_header",
        (edit(trailing(L(43, 44)), L(43, 44) + "            pass\n"),),
        rungs=("whitespace",),
        error="patch_ambiguous",
        error_edit=0,
        lines=(43, 61),
    ),
    Case(
        "ambiguous_indentation_two_depths",
        (edit(trailing(shift(L(31), 4), " "), "            for k in nl.sequential_range(n_k):\n"),),
        rungs=("indentation",),
        error="patch_ambiguous",
        error_edit=0,
        lines=(24, 31),
    ),
    Case(
        "ambiguous_fuzzy_near_tie_between_dma_copies",
        (edit("            nisa.dma_copy(dst=w_sb, src=w_gate_up[rows, cols])\n", "X\n"),),
        rungs=("fuzzy",),
        error="patch_ambiguous",
        error_edit=0,
        lines=(36, 37),
    ),
    # --- no match --------------------------------------------------------------------------
    Case(
        "no_match_absent_anchor",
        (
            edit(
                "        gate = nl.ndarray((TILE_F, tokens), dtype=nl.bfloat16, buffer=nl.psum)\n"
                "        nisa.activation(dst=gate, op=nl.gelu_apprx_tanh, data=gate_ps, scale=0.5)\n",
                "X\n",
            ),
        ),
        error="patch_no_match",
        error_edit=0,
        lines=(41, 42),
    ),
    Case(
        # A stale line from an older version of the kernel.
        "no_match_stale_line",
        (edit("        nisa.tensor_copy(dst=out_sb, src=out_ps)\n", "X\n"),),
        error="patch_no_match",
        error_edit=0,
        lines=(63,),
    ),
    Case(
        # Most lines agree, but the first line is a different statement: not anchored.
        "no_match_fuzzy_not_anchored",
        (edit("        gate = nl.ndarray(gate_ps.shape, dtype=nl.float32)\n" + L(42, 49), "X\n"),),
        error="patch_no_match",
        error_edit=0,
        lines=(42,),
    ),
    Case(
        # Every line agrees but the last, which the file does not have: not anchored.
        "no_match_fuzzy_last_line_not_anchored",
        (edit(L(41, 49) + "        nl.sync()\n", "X\n"),),
        error="patch_no_match",
        error_edit=0,
        lines=(41, 49),
    ),
    Case(
        "no_match_empty_search",
        (edit("", "X\n"),),
        error="patch_no_match",
        error_edit=0,
        message="empty SEARCH",
    ),
    # --- outside the editable files --------------------------------------------------------
    Case(
        "outside_editable_helper",
        (edit(HELPER_TEXT, 'ROUNDING = "toward_zero"\n', file=HELPER),),
        error="patch_outside_editable",
        error_edit=0,
        message="is not editable",
    ),
    Case(
        "outside_editable_dotdot",
        (edit("BUFS = 2\n", "BUFS = 3\n", file="kernels/../kernels/expert_mlp.py"),),
        error="patch_outside_editable",
        error_edit=0,
        message="is not a relative path inside the kernel",
    ),
    Case(
        "outside_editable_absolute",
        (edit("BUFS = 2\n", "BUFS = 3\n", file="/kernels/expert_mlp.py"),),
        error="patch_outside_editable",
        error_edit=0,
        message="is not a relative path inside the kernel",
    ),
    # --- no-ops ----------------------------------------------------------------------------
    Case("noop_search_equals_replace", (edit(SILU, SILU),), error="patch_noop"),
    Case("noop_whitespace_only", (edit("BUFS = 2\n", "BUFS = 2   \n"),), error="patch_noop"),
    # --- several edits ---------------------------------------------------------------------
    Case(
        "multi_second_fails_nothing_applied",
        (edit("BUFS = 2\n", "BUFS = 3\n"), edit("NOT_IN_THE_KERNEL = 1\n", "X\n")),
        error="patch_no_match",
        error_edit=1,
    ),
    Case(
        "multi_second_depends_on_first",
        (
            edit("BUFS = 2\n", "BUFS = 2\nPREFETCH = 1\n"),
            edit("PREFETCH  = 1 \n", "PREFETCH = 2\n"),
        ),
        rungs=("exact", "whitespace"),
        result=(("BUFS = 2\n", "BUFS = 2\nPREFETCH = 2\n"),),
    ),
    Case(
        "multi_first_makes_second_ambiguous",
        (edit(L(55), L(55) + L(55)), edit(L(55), DOWN_AFFINE)),
        rungs=("exact",),
        error="patch_ambiguous",
        error_edit=1,
        lines=(55, 56),
    ),
)
