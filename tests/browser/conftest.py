"""One headless Chromium per test module; each test opens its own contexts (users)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.helpers import EXPECT_TIMEOUT_MS, chromium  # explains a missing Playwright

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(autouse=True)
def patient_expect() -> None:
    """Playwright's expect() gives up after 5 s; a shared 2-core machine needs longer."""
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
