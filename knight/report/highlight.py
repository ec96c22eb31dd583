"""Syntax-highlighted unified diffs and kernel sources as HTML (Pygments, CSS classes)."""

from __future__ import annotations

from html import escape

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

_LEXER = PythonLexer(stripnl=False, ensurenl=False)
_FORMATTER = HtmlFormatter(nowrap=True)
LINE_CLASSES = {"+": "add", "-": "del", "@": "hunk"}


def style_css() -> str:
    """The CSS rules of the highlighting, scoped to `.code`."""
    return HtmlFormatter(style="default").get_style_defs(".code")


def python_html(code: str) -> str:
    """One line (or block) of Python as highlighted HTML spans."""
    return highlight(code, _LEXER, _FORMATTER).rstrip("\n")


def diff_html(diff: str) -> str:
    """A unified diff as a `<pre>`: file headers plain, hunk headers marked, added and removed
    lines shaded, and the code on every line highlighted as Python."""
    if not diff.strip():
        return '<p class="muted">no diff recorded (the patch did not apply or changed nothing)</p>'
    rows = []
    for raw in diff.rstrip("\n").split("\n"):
        if raw.startswith(("+++", "---")):
            rows.append(f'<span class="file">{escape(raw)}</span>')
        elif raw.startswith("@@"):
            rows.append(f'<span class="hunk">{escape(raw)}</span>')
        elif raw[:1] in ("+", "-", " "):
            klass = LINE_CLASSES.get(raw[0], "ctx")
            rows.append(f'<span class="{klass}">{escape(raw[0])}{python_html(raw[1:])}</span>')
        else:
            rows.append(f'<span class="ctx">{escape(raw)}</span>')
    return '<pre class="code diff">' + "\n".join(rows) + "</pre>"
