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


# The concepts the site promises a page (or a section of one) for, by page: a heading of
# the page must contain each word (case-insensitive). Removing or renaming one fails here.
CONCEPTS = {
    "getting-started.md": ["install", "run it", "test it"],
    "handlers.md": ["websocket"],
    "http.md": ["request", "responses", "server-sent events"],
    "events.md": ["groups", "broadcast"],
    "topics.md": ["history", "presence", "long-poll"],
    "history-presence.md": ["history", "presence"],
    "layers.md": ["choosing one", "options", "writing one"],
    "sync.md": ["def", "orm bridge"],
    "django.md": ["install", "run it", "orm bridge", "testing"],
    "testing.md": ["def", "async def", "layers"],
    "production.md": ["workers", "reload", "proxy", "long-poll", "systemd", "containers"],
    "operations.md": ["metrics", "inspect", "logs"],
    "architecture.md": ["layering", "fast paths", "no i/o"],
    "upgrading.md": ["what maps to what", "side by side", "gradual path"],
    "reference/api.md": [],
    "reference/cli.md": [],
}


def test_every_promised_concept_has_its_page_and_section() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = set(_pages(config["nav"]))
    docs = ROOT / config["docs_dir"]
    for page, words in CONCEPTS.items():
        assert page in listed, f"{page} is not in the nav"
        headings = [
            line.lstrip("#").strip().lower()
            for line in (docs / page).read_text().splitlines()
            if line.startswith("#")
        ]
        for word in words:
            assert any(word in h for h in headings), f"{page}: no heading on {word!r}"
    # The generated references are generated, not copied.
    assert "::: chanlite" in (docs / "reference/api.md").read_text()
    cli = (docs / "reference/cli.md").read_text()
    assert ":module: chanlite.cli" in cli
    assert ":module: chanlite.contrib.django.management.commands.chanlite" in cli
