"""MkDocs hooks of the documentation site (mkdocs.yml: ``hooks``)."""

from __future__ import annotations

import re
from typing import Any

from mkdocs.exceptions import PluginError

# mkdocs-click 0.9 prints click 8.3's "no default" sentinel as an option's default
# (https://github.com/mkdocs/mkdocs-click/pull/95); such an option had None before 8.3,
# which mkdocs-click shows as a plain None.
_UNSET = "<code>Sentinel.UNSET</code>"
_SENTINEL = re.compile(r"<code>Sentinel\.[A-Z_]+</code>")


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    """Show an option without a default as the CLI reference did before click 8.3."""
    html = html.replace(_UNSET, "None")
    if _SENTINEL.search(html):  # another sentinel leaking: map it above, do not ship it
        raise PluginError(f"{page.file.src_path}: a click sentinel is shown as a value")
    return html
