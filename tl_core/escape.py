"""Names users typed, made safe wherever they are shown.

A run name, a data set or class name, or an uploaded file's name is data, never markup:
- `markdown` for Streamlit text (`st.markdown`, `st.caption`, `st.error`, widget labels...),
  which renders Markdown: a name like `[x](https://evil)` or `![](https://evil/pixel)` would
  otherwise become a live link or an image the browser loads by itself;
- `plotly` for chart labels, legends and hover text, where Plotly renders a subset of HTML
  (`<a href=...>` is a clickable link);
- `csv_cell` for spreadsheet exports, where a cell starting with `=`, `+`, `-` or `@` is a
  formula (the OWASP advice, as spreadsheet-safe exporters do: prefix a single quote).
"""

from __future__ import annotations

import html
import re
from typing import Any

# What makes Markdown out of plain text once newlines are gone: emphasis, code, links and
# images (their brackets), HTML and autolinks (`<...>`), headings, strikethrough, math, and
# Streamlit's `:colour[...]` (bracket too). Escaping only these keeps messages readable.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#~$@])")
# GFM turns bare `https://...` and `www....` into links: break the `://` and the `www.`.
_AUTOLINK = re.compile(r"(:)(?=//)|(?<=www)(\.)", re.IGNORECASE)
# A list item or a heading underline at the start: `- x`, `+ x`, `= x`, `1. x`, `1) x`.
_LEADING_BLOCK = re.compile(r"^(\s*)([-+=]|\d+[.)])")
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def markdown(text: Any) -> str:
    """`text` shown literally inside Markdown: no links, images, emphasis, headings."""
    flat = _LINE_BREAKS.sub(" ", str(text))
    flat = _MARKDOWN_SPECIAL.sub(r"\\\1", flat)
    flat = _AUTOLINK.sub(lambda m: "\\" + m.group(0), flat)
    # The backslash goes before the marker's last character: `\-`, `1\.`.
    return _LEADING_BLOCK.sub(lambda m: f"{m.group(1)}{m.group(2)[:-1]}\\{m.group(2)[-1]}", flat)


def plotly(text: Any) -> str:
    """`text` shown literally in a Plotly label, legend or hover box."""
    return html.escape(str(text), quote=False)


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet will not run as a formula; other values unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
