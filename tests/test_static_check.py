"""The static allowlist's text channels and builtins: what a kernel may write, and what it may not."""

from __future__ import annotations

from pathlib import Path

import pytest

from knight.evaluation import check_source

ROOT = Path(__file__).resolve().parents[1]
KERNELS = sorted(ROOT.glob("baselines/*/baseline.py")) + sorted(
    ROOT.glob("benchmarks/calibration/*.py")
)


def _messages(body: str) -> list[str]:
    source = "from knight.npu import nisa, nl\n\n\ndef kernel(x, out):\n" + body
    return [v.message for v in check_source(source)]


@pytest.mark.parametrize("path", KERNELS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_bundled_kernels_pass(path):
    assert check_source(path.read_text(), path.name) == []


@pytest.mark.parametrize(
    "body",
    [
        '    names = [f"w{i}" for i in range(4)]\n',  # plain f-string fields name tiles
        '    """A docstring may say 100 % anything."""\n    n = len(x.shape)\n',
        "    max = 3\n    n = min(max, sum([1, 2]))\n",  # allowed builtins may be rebound
        "    pairs = sorted(zip(range(3), reversed(range(3))))\n",
    ],
)
def test_what_kernels_need_is_allowed(body):
    assert _messages(body) == []


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("    match x:\n        case str(format=f):\n            pass\n", "match statements"),
        ('    t = "%s" % (x,)\n', "'%' in a string literal"),
        ('    t = f"{x!r}"\n', "conversion !r"),
        ('    t = f"{x:>{8}}"\n', "format spec"),
        ("    t = str(x)\n", "builtin name 'str'"),
        ("    t = chr(37)\n", "builtin name 'chr'"),
        ('    t = b"%s"\n', "bytes literals"),
        ("    t = format(x)\n", "'format' is not allowed"),
        ("    t = isinstance(x, int)\n", "'isinstance' is not allowed"),
        ("    vars = 1\n", "'vars' is not allowed"),
        ("    str = 1\n", "builtin name 'str'"),  # shadowing here would unlock str() elsewhere
        ("    t = memoryview\n", "'memoryview' is not allowed"),
        ("    t = bytes(4)\n", "builtin name 'bytes'"),
        ("    t = ord('a')\n", "builtin name 'ord'"),
    ],
)
def test_text_channels_and_other_builtins_are_refused(body, needle):
    messages = _messages(body)
    assert any(needle in m for m in messages), messages
