"""The kernel language against NKI: the conformance table matches the code, and `knight export`
writes NKI files whose every call the table allows."""

from __future__ import annotations

import ast
import enum
import inspect
import json
from pathlib import Path

import pytest
from cli_runner import knight_here

from knight.export import export_kernel, nki_calls
from knight.npu import conformance, nisa, nl
from knight.problems import load_problem

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = [
    ("moe_decode", ROOT / "baselines" / "moe_decode" / "baseline.py"),
    ("moe_router", ROOT / "baselines" / "moe_router" / "baseline.py"),
    ("rmsnorm", ROOT / "baselines" / "rmsnorm" / "baseline.py"),
    ("moe_decode", ROOT / "benchmarks" / "calibration" / "moe_optimized.py"),
]
# NKI documents the default buffer as sbuf, spelled differently across pages.
BUFFER_DEFAULTS = {"MemoryRegion.sbuf", "None", "Ellipsis"}


def _default_text(value: object) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    return repr(value)


def _module(name: str):
    return {"nisa": nisa, "nl": nl}[name]


def test_every_public_name_has_exactly_one_row():
    listed = [r.knight for r in conformance.ROWS]
    assert len(listed) == len(set(listed))
    public = {f"nisa.{n}" for n in nisa.__all__} | {f"nl.{n}" for n in nl.__all__}
    rows = {r.knight for r in conformance.ROWS if not r.knight.startswith("view.")}
    assert public == rows
    for r in conformance.ROWS:
        assert r.extension or (r.nki and r.source.startswith(conformance.DOCS)), r.knight


@pytest.mark.parametrize(
    "r", [r for r in conformance.ROWS if r.kind == "function"], ids=lambda r: r.knight
)
def test_functions_have_nki_names_parameters_order_and_defaults(r):
    module, name = r.knight.split(".")
    fn = getattr(_module(module), name)
    assert r.nki.rsplit(".", 1)[1] == name
    ours = [
        (p.name, None if p.default is p.empty else _default_text(p.default))
        for p in inspect.signature(fn).parameters.values()
    ]
    theirs = [(n, d) for n, d in conformance.parameters(r.signature) if n not in r.omitted]
    assert [n for n, _ in ours] == [n for n, _ in theirs], r.knight
    for (n, mine), (_, doc) in zip(ours, theirs, strict=True):
        if n == "buffer":
            assert mine == repr(nl.sbuf) and doc in BUFFER_DEFAULTS
        else:
            assert mine == doc, f"{r.knight}: default of {n} is {mine}, NKI documents {doc}"


@pytest.mark.parametrize(
    "r", [r for r in conformance.ROWS if r.kind == "enum"], ids=lambda r: r.knight
)
def test_enums_have_nki_members(r):
    cls = getattr(nisa, r.knight.split(".")[1])
    assert tuple(cls.__members__) == r.members
    assert r.knight.split(".")[1] in nisa.ENUMS


def test_docs_table_is_generated_from_the_rows():
    text = (ROOT / "docs" / "kernel-language.md").read_text()
    assert conformance.markdown_table() in text


# ----------------------------------------------------------------------------- export


@pytest.mark.parametrize(("problem", "path"), BUNDLED, ids=lambda x: getattr(x, "name", x))
def test_export_writes_nki_whose_every_call_the_table_allows(problem, path):
    prob = load_problem(problem)
    out = export_kernel(path.read_text(), path.name, prob).source
    tree = ast.parse(out)
    imports = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    froms = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert {"nki", "nki.isa", "nki.language"} <= set(imports)
    assert not any(m.startswith("knight") for m in imports + [f or "" for f in froms])
    # the @nki.jit entry takes the inputs, allocates the outputs and returns them
    entry = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == prob.spec.entry
    )
    assert [ast.unparse(d) for d in entry.decorator_list] == ["nki.jit"]
    assert [a.arg for a in entry.args.args] == list(prob.spec.inputs)
    launch = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "launch")
    if prob.spec.grid == 2:
        assert f"{prob.spec.entry}[2](" in ast.unparse(launch)
    calls = nki_calls(out)
    assert calls
    for module, name, kws, line in calls:
        r = conformance.row(module, name)
        assert r is not None and not r.extension, f"line {line}: {module}.{name}"
        assert set(kws) <= conformance.keyword_names(r), f"line {line}: {module}.{name}{kws}"
    for node in ast.walk(tree):  # enum members as NKI spells them
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            if ast.unparse(node.value) in {f"nisa.{e}" for e in nisa.ENUMS}:
                assert node.attr in conformance.row("nisa", node.value.attr).members
    assert "broadcast_to" not in out.replace("_broadcast_to", "")


def test_knight_export_writes_a_file(tmp_path):
    target = tmp_path / "out.py"
    res = knight_here("export", "baselines/moe_decode/baseline.py", "-o", str(target), cwd=ROOT)
    assert res.returncode == 0, res.stderr
    text = target.read_text()
    assert "import nki.isa as nisa" in text and "@nki.jit" in text
    res = knight_here(
        "export", "baselines/rmsnorm/baseline.py", "--json", cwd=ROOT
    )  # problem found by its entry
    assert res.returncode == 0, res.stderr
    assert '"grid": 1' in res.stdout and "def launch(x, gamma)" in res.stdout


def test_knight_export_refuses_a_knight_extension_naming_it_and_its_line(tmp_path):
    source = (ROOT / "baselines" / "rmsnorm" / "baseline.py").read_text()
    bad = source.replace(
        "nisa.activation(sq, nl.square, xt)", "nisa.activation(sq, nl.identity, xt)"
    )
    line = next(i for i, t in enumerate(bad.splitlines(), 1) if "nl.identity" in t)
    kernel = tmp_path / "kernel.py"
    kernel.write_text(bad)
    res = knight_here("export", str(kernel), "--problem", "rmsnorm")
    assert res.returncode == 2
    assert res.stdout == ""
    (msg,) = res.stderr.strip().splitlines()
    assert "nl.identity" in msg and f"kernel.py:{line}" in msg and "Knight extension" in msg


def test_knight_export_refuses_knight_internals(tmp_path):
    source = (ROOT / "baselines" / "rmsnorm" / "baseline.py").read_text()
    kernel = tmp_path / "kernel.py"
    kernel.write_text(
        source.replace(
            "from knight.npu import nisa, nl",
            "from knight.npu import nisa, nl\nfrom knight.npu import tensor",
        )
    )
    res = knight_here("export", str(kernel), "--problem", "rmsnorm")
    assert res.returncode == 2 and "no NKI counterpart" in res.stderr
    res = knight_here("export", str(tmp_path / "missing.py"))
    assert res.returncode == 2 and res.stderr.startswith("error:")


def test_a_kernel_file_names_its_problem_by_its_entry_function(tmp_path):
    """eval, profile and export without --problem judge the file on the installed problem whose
    entry function it defines; --problem wins; a file defining none gets the default problem."""
    from knight.problems import DEFAULT_PROBLEM, problem_for_kernel

    rmsnorm = (ROOT / "baselines" / "rmsnorm" / "baseline.py").read_text()
    assert problem_for_kernel(rmsnorm).id == "rmsnorm"
    assert problem_for_kernel(rmsnorm, "softmax").id == "softmax"
    assert problem_for_kernel("def helper():\n    pass\n").id == DEFAULT_PROBLEM
    kernel = tmp_path / "mine.py"
    kernel.write_text(rmsnorm)
    shown = knight_here("profile", str(kernel), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["problem"] == "rmsnorm"
