"""No Django views: the tutorial's pages are not what these tests are about."""

from __future__ import annotations

from typing import Any

urlpatterns: list[Any] = []
