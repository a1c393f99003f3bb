"""Statement text with its literals replaced by ``?``, so the same statement groups together and
values (names, e-mail addresses, tokens) stay out of the report."""

from __future__ import annotations

import re

_LITERALS = re.compile(
    r"""(?P<string>E?'(?:[^']|'')*'?)"""          # 'text', E'text' (possibly truncated)
    r"""|(?P<dollar>\$(?P<tag>\w*)\$.*?(?:\$(?P=tag)\$|$))"""  # $$text$$ / $tag$text$tag$
    r"""|(?P<number>(?<![\w$.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.]))""",
    re.DOTALL)
_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_SPACE = re.compile(r"\s+")


def normalise_query(query: str) -> str:
    """``SELECT * FROM t WHERE id IN (1, 2) AND name = 'x'`` -> ``... IN (?) AND name = ?``;
    bind parameters ($1) stay as they are."""
    out = _LITERALS.sub("?", query)
    out = _IN_LIST.sub("(?)", out)
    return _SPACE.sub(" ", out).strip()
