"""The docs site's table of contents: every page is in it, and it names no missing page."""

from __future__ import annotations

from typing import Any

import yaml

from tests.docs.snippets import ROOT


def _pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _pages(value)]
    return []


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = _pages(config["nav"])
    docs = ROOT / config["docs_dir"]
    on_disk = {str(p.relative_to(docs)) for p in docs.rglob("*.md")}
    assert sorted(set(listed) - on_disk) == [], "nav entries without a page"
    assert sorted(on_disk - set(listed)) == [], "pages missing from the nav in mkdocs.yml"
    assert len(listed) == len(set(listed)), "a page listed twice"
