"""The kernel language against NKI: one row per public `nisa`/`nl` name (the one statement).

Each row names the Knight spelling, the NKI name, NKI's documented signature (as printed on the
page in `source`), the NKI parameters Knight does not accept, and what differs. Rows marked
`extension` are Knight-only: `knight export` refuses kernels that use them. The table in
`docs/kernel-language.md` is generated from these rows (`markdown_table`), and tests check every
row against the code's real signatures.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from knight.npu import nl

DOCS = "https://awsdocs-neuron.readthedocs-hosted.com"
V2_33 = f"{DOCS}/en/v2.33.0/nki/api/generated/"
V2_30 = f"{DOCS}/en/v2.30.0/nki/api/generated/"
V2_32 = f"{DOCS}/en/v2.32.0/nki/api/generated/"  # documents nc_match_replace8's duplicate rule
GENERAL = f"{DOCS}/general/nki/api/generated/"  # the unversioned "current" pages (Trn2, Trn3)
LATEST = f"{DOCS}/en/latest/nki/api/generated/"
NL_INDEX = f"{DOCS}/en/v2.33.0/nki/api/nki.language.html"
DTYPES_PAGE = f"{DOCS}/en/v2.33.1/nki/api/nki.api.shared.html"
CHECKED = "2026-12-02"  # when the pages above were read


@dataclass(frozen=True)
class Row:
    """One public name of the kernel language and how it relates to NKI."""

    knight: str  # "nisa.dma_copy", "nl.bfloat16", "view.permute"
    nki: str  # "nki.isa.dma_copy"; "" for a Knight extension
    signature: str  # NKI's documented signature; "" for constants
    source: str  # the documentation page read
    difference: str = ""  # what Knight accepts or does differently ("" = identical)
    omitted: tuple[str, ...] = ()  # NKI parameters Knight does not accept
    members: tuple[str, ...] = ()  # enum members, as NKI spells them
    extension: bool = False  # Knight-only: not part of NKI

    @property
    def kind(self) -> str:
        if self.members:
            return "enum"
        return "function" if self.signature else "constant"


def _isa(name: str, signature: str, base: str = V2_33, **kw) -> Row:
    return Row(f"nisa.{name}", f"nki.isa.{name}", signature, f"{base}nki.isa.{name}.html", **kw)


def _nl(name: str, signature: str = "", base: str = GENERAL, page: str | None = None, **kw) -> Row:
    url = f"{base}nki.language.{page or name}.html"
    return Row(f"nl.{name}", f"nki.language.{name}", signature, url, **kw)


_REFUSED = "values other than the default are refused (not modelled)"

ISA_ROWS: tuple[Row, ...] = (
    _isa(
        "dma_copy",
        "dma_copy(dst, src, oob_mode=oob_mode.error, dge_mode=dge_mode.unknown, "
        "engine=engine.unknown, name=None)",
        base=GENERAL,
        difference="oob_mode.skip refused; the queue follows (dge_mode, engine) as "
        "nisa.dma_route states (unknown mode: swdge on GpSimd, else hwdge; unknown engine: "
        "SyncE); casts between float dtypes go through fp32",
    ),
    _isa(
        "dma_transpose",
        "dma_transpose(dst, src, axes=None, dge_mode=dge_mode.unknown, "
        "oob_mode=oob_mode.error, name=None)",
        base=GENERAL,
        difference="hardware-DGE form only (dge_mode unknown or hwdge); the indirect swdge "
        "form and oob_mode.skip are refused",
    ),
    _isa(
        "nc_matmul",
        "nc_matmul(dst, stationary, moving, is_stationary_onezero=False, "
        "is_moving_onezero=False, is_transpose=False, accumulate=None, tile_position=(), "
        "tile_size=(), perf_mode=matmul_perf_mode.none, name=None)",
        difference=f"is_*_onezero, is_transpose, tile_position, tile_size, perf_mode: {_REFUSED}",
    ),
    _isa(
        "nc_transpose",
        "nc_transpose(dst, data, engine=engine.unknown, name=None)",
        base=GENERAL,
        difference="engine.unknown resolves to TensorE",
    ),
    _isa(
        "activation",
        "activation(dst, op, data, bias=None, scale=1.0, reduce_op=None, reduce_res=None, "
        "reduce_cmd=reduce_cmd.idle, name=None)",
        base=LATEST,
        difference="reduce_cmd reset and reduce (state kept across instructions) are refused; "
        "v2.33 adds engine=engine.scalar (GpSimd only on NeuronCore-v4), not accepted",
    ),
    _isa(
        "activation_reduce",
        "activation_reduce(dst, op, data, reduce_op, reduce_res, bias=None, scale=1.0, name=None)",
    ),
    _isa(
        "tensor_tensor",
        "tensor_tensor(dst, data1, data2, op, engine=engine.unknown, name=None)",
        difference="arithmetic ops only (add, subtract, multiply, divide, maximum, minimum); "
        "engine.unknown resolves to VectorE",
    ),
    _isa(
        "tensor_scalar",
        "tensor_scalar(dst, data, op0, operand0, reverse0=False, op1=None, operand1=None, "
        "reverse1=False, engine=engine.unknown, name=None)",
        difference="arithmetic ops only; engine.unknown resolves to VectorE",
    ),
    _isa(
        "tensor_copy",
        "tensor_copy(dst, src, engine=engine.unknown, name=None)",
        base=GENERAL,
        difference="engine.unknown resolves to VectorE",
    ),
    _isa(
        "tensor_reduce",
        "tensor_reduce(dst, op, data, axis, negate=False, keepdims=False, name=None)",
        base=GENERAL,
        difference="ops add, maximum, minimum (no bitvec ops)",
    ),
    _isa(
        "memset",
        "memset(dst, value, engine=engine.unknown, name=None)",
        difference="engine.unknown resolves to VectorE",
    ),
    _isa("max8", "max8(dst, src, name=None)"),
    _isa(
        "nc_find_index8",
        "nc_find_index8(dst, data, vals, name=None)",
        base=LATEST,
        difference="dst must be uint32 (NKI also allows uint16)",
    ),
    _isa(
        "nc_match_replace8",
        "nc_match_replace8(dst, data, vals, imm, dst_idx=None, name=None)",
        base=V2_32,
        difference="dst_idx must be uint32 [P, 8]; a value absent from data (NKI: undefined) "
        "gives index 0xFFFFFFFF and replaces nothing",
    ),
    _isa("register_alloc", "register_alloc(x=None)", base=LATEST),
    _isa(
        "register_load",
        "register_load(dst, src)",
        base=LATEST,
        difference="src is a one-element int32/uint32 SBUF tile; the register is recorded on "
        "SyncE and belongs to the core that allocated it",
    ),
    _isa(
        "sendrecv",
        "sendrecv(src, dst, send_to_rank, recv_from_rank, pipe_id, dma_engine=dma_engine.dma, "
        "name=None)",
        base=V2_30,
        difference="only dma_engine.gpsimd_dma (<= 512 B per partition) is modelled; the "
        "default dma_engine.dma is refused; ranks must name the other core",
    ),
    _isa(
        "core_barrier",
        "core_barrier(data, cores, engine=engine.gpsimd, name=None)",
        difference="cores=(0, 1) only, as NKI",
    ),
    Row(
        "nisa.engine",
        "nki.isa.engine",
        "",
        f"{DOCS}/en/v2.29.0/_sources/nki/api/generated/nki.isa.engine.rst",
        members=("tensor", "vector", "scalar", "gpsimd", "dma", "sync", "unknown"),
    ),
    Row(
        "nisa.dge_mode",
        "nki.isa.dge_mode",
        "",
        f"{GENERAL}nki.isa.dge_mode.html",
        members=("unknown", "swdge", "hwdge", "none"),
    ),
    Row(
        "nisa.oob_mode",
        "nki.isa.oob_mode",
        "",
        f"{GENERAL}nki.isa.dma_copy.html",
        members=("error", "skip"),
    ),
    Row(
        "nisa.reduce_cmd",
        "nki.isa.reduce_cmd",
        "",
        f"{LATEST}nki.isa.activation.html",
        members=("idle", "reset", "reduce", "reset_reduce"),
    ),
    Row(
        "nisa.matmul_perf_mode",
        "nki.isa.matmul_perf_mode",
        "",
        f"{V2_33}nki.isa.nc_matmul.html",
        members=("none", "double_row"),
    ),
    Row(
        "nisa.dma_engine",
        "nki.isa.dma_engine",
        "",
        f"{LATEST}nki.isa.dma_engine.html",
        members=("dma", "gpsimd_dma"),
    ),
)

# Knight-only public names and why they exist (kernels using them cannot be exported).
EXTENSIONS = {
    "nl.identity": "pass-through activation kept for existing kernels; NKI's documented "
    "pass-through is nl.copy",
}
_OP = "an op value passed to instructions (op=nl.{0}), as NKI kernels pass it; calling it on a tile is not supported"
_RANGE = "(start, stop=None, step=1)"

NL_ROWS: tuple[Row, ...] = (
    *(Row(f"nl.{d}", f"nki.language.{d}", "", DTYPES_PAGE) for d in nl.DTYPES),
    *(
        Row(f"nl.{b}", f"nki.language.{b}", "", NL_INDEX)
        for b in ("sbuf", "psum", "hbm", "shared_hbm")
    ),
    Row(
        "nl.tile_size",
        "nki.language.tile_size",
        "",
        NL_INDEX,
        difference="fields pmax, psum_fmax, gemm_stationary_fmax, gemm_moving_fmax",
    ),
    _nl(
        "ndarray",
        "ndarray(shape, dtype, buffer=MemoryRegion.sbuf, name='', address=None)",
        omitted=("address",),
        difference="explicit placement (address) is not accepted: the simulator allocates",
    ),
    _nl(
        "zeros",
        "zeros(shape, dtype, buffer=None, name='')",
        base=LATEST,
        difference="the zero fill is a VectorE memset",
    ),
    _nl("program_id", "program_id(axis)", base=LATEST, difference="one grid axis (0)"),
    _nl("num_programs", "num_programs(axes=None)", base=LATEST, difference="one grid axis"),
    _nl("affine_range", f"affine_range{_RANGE}", difference="unrolled at trace time"),
    _nl("sequential_range", f"sequential_range{_RANGE}", difference="unrolled at trace time"),
    _nl("static_range", f"static_range{_RANGE}"),
    _nl("ds", "ds(start, size)", base=LATEST, difference="start may not be a register"),
    *(
        Row(f"nl.{op}", f"nki.language.{op}", "", NL_INDEX, _OP.format(op))
        for op in nl.ACTIVATION_OPS + nl.ALU_OPS
        if f"nl.{op}" not in EXTENSIONS
    ),
    *(Row(name, "", "", "", why, extension=True) for name, why in EXTENSIONS.items()),
)

# View methods kernels use on tiles and HBM tensors (`x.reshape(...)`), and NKI's counterparts.
VIEW_ROWS: tuple[Row, ...] = (
    Row(
        "view.reshape",
        "nki.language.NkiTensor.reshape",
        "",
        f"{V2_33}nki.language.NkiTensor.html",
        difference="no copy; the partition axis of an on-chip tile is kept",
    ),
    Row(
        "view.permute",
        "nki.language.NkiTensor.permute",
        "",
        f"{V2_33}nki.language.NkiTensor.html",
        difference="on chip the partition axis stays first",
    ),
    Row(
        "view.broadcast_to",
        "nki.language.NkiTensor.expand_dim / broadcast",
        "",
        f"{V2_33}nki.language.NkiTensor.html",
        difference="numpy-style target shape (HBM DMA sources only); `knight export` writes it "
        "as expand_dim + broadcast calls",
    ),
)

ROWS: tuple[Row, ...] = ISA_ROWS + NL_ROWS + VIEW_ROWS
BY_NAME: dict[str, Row] = {r.knight: r for r in ROWS}


def row(module: str, name: str) -> Row | None:
    """The row for `nisa.<name>` / `nl.<name>` (module "nisa" or "nl"), or None if unlisted."""
    return BY_NAME.get(f"{module}.{name}")


def parameters(signature: str) -> list[tuple[str, str | None]]:
    """(name, default source or None) for each parameter of a documented signature."""
    fn = ast.parse(f"def {signature}: pass").body[0]
    assert isinstance(fn, ast.FunctionDef)
    args = fn.args.posonlyargs + fn.args.args
    defaults = [None] * (len(args) - len(fn.args.defaults)) + [
        ast.unparse(d) for d in fn.args.defaults
    ]
    out = [(a.arg, d) for a, d in zip(args, defaults, strict=True)]
    out += [
        (a.arg, None if d is None else ast.unparse(d))
        for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True)
    ]
    return out


def keyword_names(r: Row) -> set[str]:
    """The parameter names a call may pass by keyword in NKI (Knight accepts all but `omitted`)."""
    return {n for n, _ in parameters(r.signature)} - set(r.omitted) if r.signature else set()


def markdown_table() -> str:
    """The conformance table as Markdown (docs/kernel-language.md embeds this text)."""
    lines = [
        "| Knight | NKI | Signature difference | Doc checked |",
        "|---|---|---|---|",
    ]
    for r in ROWS:
        nki = f"`{r.nki}`" if r.nki else "— (Knight extension)"
        diff = r.difference or "none"
        if r.omitted:
            diff = f"not accepted: {', '.join(r.omitted)}; {diff}"
        if r.members:
            diff = f"members {', '.join(r.members)}" + (f"; {r.difference}" if r.difference else "")
        src = f"[{_page(r.source)}]({r.source})" if r.source else "—"
        lines.append(f"| `{r.knight}` | {nki} | {diff} | {src} |")
    lines.append(f"\nPages read on {CHECKED}.")
    return "\n".join(lines)


def _page(url: str) -> str:
    for tag in ("v2.33.1", "v2.33.0", "v2.32.0", "v2.30.0", "v2.29.0", "latest"):
        if f"/{tag}/" in url:
            return tag
    return "current" if "/general/" in url else "page"
