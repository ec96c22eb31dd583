"""`knight export`: turn a Knight kernel into a real NKI kernel file.

The kernel language is a subset of NKI (`knight/npu/conformance.py`), so the body carries over
as written: only the imports change, `view.broadcast_to(...)` becomes NKI's
`expand_dim`/`broadcast` view calls, and an `@nki.jit` entry allocates the outputs in shared
HBM, calls the body and returns them (kernels here receive their outputs as parameters; NKI
kernels return them). Two-core kernels get a launcher with NKI's LNC=2 grid (`kernel[2](...)`).
A kernel that uses a Knight extension, or anything of Knight besides `nl`/`nisa`, is refused.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from knight.errors import UsageError
from knight.npu import conformance
from knight.problems.spec import Problem

HELPER = "_broadcast_to"
BROADCAST_HELPER = f'''

def {HELPER}(t, shape):
    """numpy-style broadcast of an HBM view: NKI's expand_dim, then broadcast of unit axes."""
    while len(t.shape) < len(shape):
        t = t.expand_dim(0)
    for d, n in enumerate(shape):
        if t.shape[d] == 1 and n != 1:
            t = t.broadcast(d, n)
    return t
'''


class ExportRefused(UsageError):
    """The kernel cannot be written as NKI (it uses a Knight extension or Knight internals)."""


@dataclass(frozen=True)
class Exported:
    """The NKI source and what it contains (for --json)."""

    source: str
    entry: str
    grid: int
    outputs: tuple[str, ...]


def export_kernel(source: str, filename: str, problem: Problem) -> Exported:
    """The NKI version of `source` (whose entry and outputs `problem` describes)."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as e:
        raise ExportRefused(f"{filename}:{e.lineno}: cannot parse the kernel: {e.msg}") from None
    entry = problem.spec.entry
    aliases = _check(tree, filename)
    fn = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry),
        None,
    )
    if fn is None:
        raise ExportRefused(f"{filename}: no function {entry!r} (the entry of {problem.id})")
    edits: list[tuple[int, int, str]] = []  # (start offset, end offset, text)
    lines = source.splitlines(keepends=True)
    offsets = _line_offsets(lines)

    def at(line: int, col: int) -> int:
        """Character offset of (1-based line, UTF-8 byte column), as ast reports positions."""
        return offsets[line - 1] + len(lines[line - 1].encode()[:col].decode())

    def span(node: ast.AST) -> tuple[int, int]:
        start = at(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end = at(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
        return start, end

    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "knight.npu":
            a, b = span(node)
            edits.append((a, b, _imports(aliases)))
    body_name = f"_{entry}_body"
    def_start = at(fn.lineno, fn.col_offset)
    edits.append((def_start, def_start + len(f"def {entry}"), f"def {body_name}"))
    uses_broadcast = False
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "broadcast_to"
        ):
            uses_broadcast = True
            obj = ast.get_source_segment(source, node.func.value)
            args = [ast.get_source_segment(source, a) for a in node.args]
            shape = args[0] if len(args) == 1 else f"({', '.join(args)},)"
            a, b = span(node)
            edits.append((a, b, f"{HELPER}({obj}, {shape})"))
    out = source
    for a, b, text in sorted(edits, reverse=True):
        out = out[:a] + text + out[b:]
    out = _header(filename, problem) + out.rstrip() + "\n"
    if uses_broadcast:
        out += BROADCAST_HELPER
    out += _entry(problem, fn, body_name)
    return Exported(out, entry, problem.spec.grid, tuple(problem.spec.outputs))


def _check(tree: ast.Module, filename: str) -> dict[str, str]:
    """Refuse Knight-only constructs; return the local names of nisa/nl."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("knight"):
            if node.module != "knight.npu" or any(a.name not in ("nisa", "nl") for a in node.names):
                raise ExportRefused(
                    f"{filename}:{node.lineno}: imports from {node.module} other than nisa/nl "
                    "have no NKI counterpart"
                )
            aliases.update({a.asname or a.name: a.name for a in node.names})
        elif isinstance(node, ast.Import) and any(a.name.startswith("knight") for a in node.names):
            raise ExportRefused(
                f"{filename}:{node.lineno}: `import knight...` has no NKI counterpart; import "
                "nisa and nl with `from knight.npu import nisa, nl`"
            )
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not isinstance(node.value, ast.Name):
            continue
        module = aliases.get(node.value.id)
        if module is None:
            continue
        r = conformance.row(module, node.attr)
        if r is None or r.extension:
            why = f" ({r.difference})" if r is not None and r.difference else ""
            raise ExportRefused(
                f"{filename}:{node.lineno}: {module}.{node.attr} is a Knight extension with no "
                f"NKI counterpart{why}"
            )
    return aliases


def _imports(aliases: dict[str, str]) -> str:
    lines = ["import nki"]
    for local, name in sorted(aliases.items(), key=lambda kv: kv[1]):
        target = {"nisa": "nki.isa", "nl": "nki.language"}[name]
        lines.append(f"import {target} as {local}")
    return "\n".join(lines)


def _header(filename: str, problem: Problem) -> str:
    return (
        f"# NKI kernel exported by `knight export` from {filename} (problem {problem.id}).\n"
        "# The body is unchanged Knight kernel-language code, a subset of NKI's nki.isa and\n"
        "# nki.language (see Knight's docs/kernel-language.md, conformance table).\n"
    )


def _entry(problem: Problem, fn: ast.FunctionDef, body_name: str) -> str:
    spec = problem.spec
    inputs = list(spec.inputs)
    outputs = list(spec.outputs)
    params = [a.arg for a in fn.args.args + fn.args.kwonlyargs]
    unknown = set(params) - set(inputs) - set(outputs)
    if unknown:
        raise ExportRefused(
            f"{spec.entry} takes {sorted(unknown)}, which are neither inputs nor outputs of "
            f"{problem.id}"
        )
    dims = _symbol_sources(problem)
    lines = ["", "", "@nki.jit", f"def {spec.entry}({', '.join(inputs)}):"]
    lines.append(
        '    """Allocates the outputs in shared HBM, runs the kernel body, returns the outputs."""'
    )
    for name in outputs:
        ts = spec.outputs[name]
        shape = ", ".join(dims[d] if isinstance(d, str) else str(d) for d in ts.shape)
        shape = f"({shape},)" if len(ts.shape) == 1 else f"({shape})"
        lines.append(
            f"    {name} = nl.ndarray({shape}, dtype=nl.{ts.dtype}, buffer=nl.shared_hbm, "
            f'name="{name}")'
        )
    call_args = ", ".join(f"{p}={p}" for p in params)
    lines.append(f"    {body_name}({call_args})")
    ret = outputs[0] if len(outputs) == 1 else ", ".join(outputs)
    lines.append(f"    return {ret}")
    lines += ["", ""]
    if spec.grid == 2:
        lines += [
            f"def launch({', '.join(inputs)}):",
            '    """Run on one logical NeuronCore of two physical cores (LNC=2): NKI specialises',
            "    the kernel per physical core (nl.program_id(0) is 0 or 1). The Neuron runtime",
            '    must run with NEURON_LOGICAL_NC_CONFIG=2."""',
            f"    return {spec.entry}[2]({', '.join(inputs)})",
        ]
    else:
        lines += [
            f"def launch({', '.join(inputs)}):",
            '    """Run on one NeuronCore (LNC=1)."""',
            f"    return {spec.entry}({', '.join(inputs)})",
        ]
    return "\n".join(lines) + "\n"


def _symbol_sources(problem: Problem) -> dict[str, str]:
    """For each symbolic dimension (e.g. "T"), an expression reading it from an input's shape."""
    found: dict[str, str] = {}
    for name, ts in problem.spec.inputs.items():
        for i, d in enumerate(ts.shape):
            if isinstance(d, str) and d not in found:
                found[d] = f"{name}.shape[{i}]"
    for name, ts in problem.spec.outputs.items():
        for d in ts.shape:
            if isinstance(d, str) and d not in found:
                raise ExportRefused(
                    f"output {name} has dimension {d!r} that no input's shape determines"
                )
    return found


def nki_calls(source: str) -> list[tuple[str, str, tuple[str, ...], int]]:
    """(module, name, keyword names, line) of every `nisa.*`/`nl.*` call in an exported file."""
    tree = ast.parse(source)
    local = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in ("nki.isa", "nki.language"):
                    local[a.asname or a.name] = "nisa" if a.name == "nki.isa" else "nl"
    calls = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in local
        ):
            kws = tuple(k.arg for k in node.keywords if k.arg is not None)
            calls.append((local[node.func.value.id], node.func.attr, kws, node.lineno))
    return calls


def _line_offsets(lines: list[str]) -> list[int]:
    offsets, total = [], 0
    for line in lines:
        offsets.append(total)
        total += len(line)
    offsets.append(total)
    return offsets
