"""Static checks on candidate source, before anything runs (DESIGN.md, Trust boundary).

A kernel is a stateless function over the kernel language. Only `knight.npu.nl`, `knight.npu.nisa`
and `math` may be imported; no I/O, reflection, dynamic code, dunder or private attributes,
attribute assignment, exception handling, classes, or module-level state that survives a call.

The check is an allowlist: only the builtins in ALLOWED_BUILTINS, only the attributes in
VALUE_ATTRIBUTES. Paths that turn an object into text are closed because text is a reflection
channel (`str.format` walks attribute chains: `"{0._tensor.data}".format(view)`): no `match`
(a class pattern `case str(format=f)` binds a method without attribute syntax), no `str`/`format`
builtins, no f-string conversions or format specs, no `%` in string literals (so no
%-formatting), no bytes literals.
"""

from __future__ import annotations

import ast
import builtins
import math
from dataclasses import dataclass

from knight.npu import nisa, nl

_BUILTIN_NAMES = set(dir(builtins))

ALLOWED_MODULES = {
    "knight.npu": {"nl", "nisa"},
    "knight.npu.nl": None,
    "knight.npu.nisa": None,
    "math": None,
}
MODULE_API = {
    "nl": set(nl.__all__),
    "nisa": set(nisa.__all__),
    "math": {n for n in dir(math) if not n.startswith("_")},
}
# Attributes kernel code may use on values: the view API, a few container methods, tile sizes.
VALUE_ATTRIBUTES = {
    "shape",
    "dtype",
    "ndim",
    "buffer",
    "reshape",
    "permute",
    "broadcast_to",
    "append",
    "extend",
    "insert",
    "pop",
    "items",
    "keys",
    "values",
    "get",
    "index",
    "count",
    "pmax",
    "psum_fmax",
    "gemm_stationary_fmax",
    "gemm_moving_fmax",
}


def _nisa_enum_members(value: ast.expr, aliases: dict[str, str]) -> tuple[str, ...] | None:
    """The member names if `value` is `nisa.<enum>` (e.g. `nisa.engine`), else None."""
    if (
        isinstance(value, ast.Attribute)
        and isinstance(value.value, ast.Name)
        and aliases.get(value.value.id) == "nisa"
        and value.attr in nisa.ENUMS
    ):
        return tuple(getattr(nisa, value.attr).__members__)
    return None


FORBIDDEN_NAMES = {
    "open",
    "exec",
    "eval",
    "compile",
    "__import__",
    "getattr",
    "setattr",
    "delattr",
    "hasattr",
    "globals",
    "locals",
    "vars",
    "dir",
    "input",
    "breakpoint",
    "help",
    "memoryview",
    "id",
    "hash",
    "type",
    "object",
    "super",
    "property",
    "classmethod",
    "staticmethod",
    "print",
    "exit",
    "quit",
    "bytearray",
    "callable",
    "issubclass",
    "isinstance",
    "iter",
    "next",
    "format",
    "repr",
    "ascii",
}
FORBIDDEN_NODES = {
    ast.Try: "exception handling (try/except) is not allowed in kernels",
    ast.With: "context managers (with) are not allowed in kernels",
    ast.AsyncFunctionDef: "async code is not allowed in kernels",
    ast.AsyncFor: "async code is not allowed in kernels",
    ast.AsyncWith: "async code is not allowed in kernels",
    ast.Await: "async code is not allowed in kernels",
    ast.Global: "global state is not allowed: kernels are stateless",
    ast.Nonlocal: "nonlocal state is not allowed: kernels are stateless",
    ast.ClassDef: "class definitions are not allowed in kernels",
    ast.Yield: "generators are not allowed in kernels",
    ast.YieldFrom: "generators are not allowed in kernels",
    ast.Raise: "raising exceptions is not allowed in kernels",
    ast.Match: "match statements are not allowed in kernels (class patterns read attributes)",
}
# The builtins a kernel may call: arithmetic on shapes, containers of tiles, iteration helpers.
# Everything else (str, chr, hex, type objects, exceptions, ...) is not part of the language.
ALLOWED_BUILTINS = {
    "range",
    "len",
    "min",
    "max",
    "abs",
    "int",
    "float",
    "bool",
    "round",
    "divmod",
    "pow",
    "sum",
    "list",
    "tuple",
    "dict",
    "set",
    "frozenset",
    "enumerate",
    "zip",
    "reversed",
    "sorted",
    "any",
    "all",
    "map",
    "filter",
    "slice",
}
TEXT_CHANNEL = (
    "turns objects into text (a reflection channel: format strings walk attributes); "
    'name tiles with plain f-strings such as f"w{i}"'
)
MUTATING_METHODS = {
    "append",
    "extend",
    "insert",
    "pop",
    "update",
    "clear",
    "setdefault",
    "remove",
    "add",
}
if hasattr(ast, "TryStar"):
    FORBIDDEN_NODES[ast.TryStar] = FORBIDDEN_NODES[ast.Try]


@dataclass(frozen=True)
class Violation:
    """One forbidden construct at one line."""

    line: int
    message: str


def check_source(source: str, filename: str = "kernel.py") -> list[Violation]:
    """Every forbidden construct in `source` (empty when it may run). Raises SyntaxError."""
    tree = ast.parse(source, filename)
    checker = _Checker(_module_names(tree))
    checker.visit(tree)
    _check_module_level(tree, checker)
    return sorted(checker.violations, key=lambda v: v.line)


def _module_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _check_module_level(tree: ast.Module, checker: _Checker) -> None:
    """Top level: a docstring, imports, constant assignments and function definitions only."""
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if (
            isinstance(node, (ast.Assign, ast.AnnAssign))
            and node.value is not None
            and _is_constant(node.value)
        ):
            continue
        checker.add(node, "module level holds only imports, constants and function definitions")


def _is_constant(node: ast.AST) -> bool:
    """Literals, names, attributes of the language and arithmetic on them (no calls)."""
    return not any(
        isinstance(
            n,
            (
                ast.Call,
                ast.Lambda,
                ast.ListComp,
                ast.DictComp,
                ast.SetComp,
                ast.GeneratorExp,
                ast.NamedExpr,
            ),
        )
        for n in ast.walk(node)
    )


class _Checker(ast.NodeVisitor):
    def __init__(self, module_names: set[str]) -> None:
        self.module_names = module_names
        self.violations: list[Violation] = []
        self.aliases: dict[str, str] = {}  # local name -> "nl" | "nisa" | "math"

    def add(self, node: ast.AST, message: str) -> None:
        self.violations.append(Violation(getattr(node, "lineno", 0), message))

    def generic_visit(self, node: ast.AST) -> None:
        for kind, message in FORBIDDEN_NODES.items():
            if isinstance(node, kind):
                self.add(node, message)
        super().generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name not in ALLOWED_MODULES:
                self.add(
                    node,
                    f"import of {alias.name!r} is not allowed (only knight.npu nl/nisa and math)",
                )
            else:
                self.aliases[alias.asname or alias.name] = alias.name.rsplit(".", 1)[-1]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        allowed = ALLOWED_MODULES.get(mod, "missing")
        if node.level or allowed == "missing":
            self.add(node, f"import from {mod!r} is not allowed (only knight.npu nl/nisa and math)")
            return
        for alias in node.names:
            if allowed is not None and alias.name not in allowed:
                self.add(node, f"{mod}.{alias.name} is not part of the kernel language")
            elif allowed is None and alias.name not in MODULE_API[mod.rsplit(".", 1)[-1]]:
                self.add(node, f"{mod}.{alias.name} is not part of the kernel language")
            elif allowed is not None:
                self.aliases[alias.asname or alias.name] = alias.name

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_NAMES:
            self.add(
                node, f"{node.id!r} is not allowed in kernels (no I/O, reflection or dynamic code)"
            )
        elif node.id.startswith("__"):
            self.add(node, f"dunder name {node.id!r} is not allowed")
        elif node.id in _BUILTIN_NAMES and node.id not in ALLOWED_BUILTINS:
            # Refused as a binding too: shadowing in one function would unlock it in another.
            why = (
                TEXT_CHANNEL
                if node.id in ("str", "chr", "bin", "oct", "hex", "bytes")
                else "is not part of the kernel language (rename a variable that shadows it)"
            )
            self.add(node, f"builtin name {node.id!r} {why}")

    def visit_Expr(self, node: ast.Expr) -> None:
        # A bare string statement (a docstring) is discarded: its text may hold anything.
        if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, bytes):
            self.add(node, "bytes literals are not allowed in kernels")
        elif isinstance(node.value, str) and "%" in node.value:
            self.add(node, f"'%' in a string literal is not allowed: %-formatting {TEXT_CHANNEL}")

    def visit_FormattedValue(self, node: ast.FormattedValue) -> None:
        if node.conversion != -1:
            self.add(node, f"f-string conversion !{chr(node.conversion)} {TEXT_CHANNEL}")
        if node.format_spec is not None:
            self.add(node, f"f-string format spec {TEXT_CHANNEL}")
        self.visit(node.value)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        if attr.startswith("_"):
            self.add(node, f"private or dunder attribute {attr!r} is not allowed")
        elif isinstance(node.value, ast.Name) and node.value.id in self.aliases:
            api = MODULE_API.get(self.aliases[node.value.id], set())
            if attr not in api:
                self.add(node, f"{node.value.id}.{attr} is not part of the kernel language")
        elif (members := _nisa_enum_members(node.value, self.aliases)) is not None:
            if attr not in members:  # nisa.engine.vector and the like: NKI's configuration enums
                self.add(node, f"{attr!r} is not a member of this nisa enum ({', '.join(members)})")
        elif attr not in VALUE_ATTRIBUTES:
            self.add(
                node,
                f"attribute {attr!r} is not allowed (views offer shape, dtype, reshape, permute, ...)",
            )
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.add(node, "assigning attributes is not allowed")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.decorator_list:
            self.add(node, "decorators are not allowed in kernels")
        if node.name.startswith("__"):
            self.add(node, f"dunder function {node.name!r} is not allowed")
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            if not isinstance(default, ast.Constant):
                self.add(
                    default,
                    "default arguments must be constants (mutable defaults keep state across calls)",
                )
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            if f.value.id in self.module_names and f.attr in MUTATING_METHODS:
                self.add(
                    node,
                    f"mutating module-level {f.value.id!r} keeps state across calls; kernels are stateless",
                )
        self.generic_visit(node)

    def _check_store_target(self, target: ast.AST) -> None:
        if isinstance(target, ast.Subscript):
            base = target.value
            while isinstance(base, ast.Subscript):
                base = base.value
            if isinstance(base, ast.Name) and base.id in self.module_names:
                self.add(
                    target,
                    f"writing into module-level {base.id!r} keeps state across calls; kernels are stateless",
                )

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._check_store_target(t)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_store_target(node.target)
        self.generic_visit(node)
