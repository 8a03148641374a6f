"""The one way the report builds HTML: every dynamic string is escaped on the way in.

File names, config values, method names and warnings come from the user's disk;
a file called ``x<img src=x onerror=alert(1)>.jpg`` must show as text, never run.
Pages are assembled from :func:`tag` calls: a plain ``str`` child or attribute
value is always escaped, and only :class:`Markup` (what :func:`tag` and
:func:`escape` return) passes through unchanged. There is no other way to put
text into the page, so no section can forget to escape.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

__all__ = ["Markup", "escape", "join", "tag"]

# Elements that have no closing tag.
_VOID = frozenset({"br", "hr", "img", "meta"})


class Markup(str):
    """A string that is already safe HTML (built by :func:`tag` or :func:`escape`)."""

    __slots__ = ()


def escape(value: object) -> Markup:
    """``value`` as HTML text: ``& < > " '`` escaped; Markup is returned unchanged."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[object], sep: str = "") -> Markup:
    """Concatenate ``parts`` (each escaped unless Markup); ``sep`` is literal markup."""
    return Markup(sep.join(escape(p) for p in parts))


def tag(name: str, *children: object, **attrs: object) -> Markup:
    """``<name attrs>children</name>`` with every child and attribute value escaped.

    Attribute names come from code (``class_`` -> ``class``); a value of None or
    False leaves the attribute out, True writes it bare.
    """
    parts = [name]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        attr = key.rstrip("_").replace("_", "-")
        parts.append(attr if value is True else f'{attr}="{escape(value)}"')
    open_tag = f"<{' '.join(parts)}>"
    if name in _VOID:
        if children:
            raise ValueError(f"<{name}> cannot have children")
        return Markup(open_tag)
    return Markup(f"{open_tag}{join(children)}</{name}>")
