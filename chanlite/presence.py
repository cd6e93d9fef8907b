"""Presence as a connection's handlers see it (no I/O).

A layer announces every presence change in a group as one ``presence.diff`` event (see
:mod:`chanlite.layers.streams`). Apps mostly want to know when a *key* (a user) arrives
or goes, not each of its connections: :func:`key_events` turns a diff into
``presence.join`` / ``presence.leave`` events, only for a key's first connection joining
and its last one leaving, so a second tab of a user announces nothing.
"""

from __future__ import annotations

from typing import Any

from chanlite.layers.streams import PRESENCE_DIFF

__all__ = ["PRESENCE_DIFF", "PRESENCE_JOIN", "PRESENCE_LEAVE", "key_events"]

#: A key's first connection joined: ``{"type", "group", "key", "meta"}``.
PRESENCE_JOIN = "presence.join"
#: A key's last connection left (or its process died): ``{"type", "group", "key", "meta"}``.
PRESENCE_LEAVE = "presence.leave"

_SIDES = (("first", "joins", PRESENCE_JOIN), ("last", "leaves", PRESENCE_LEAVE))


def key_events(diff: dict[str, Any]) -> list[dict[str, Any]]:
    """The key-level events of a ``presence.diff``, joins first.

    >>> key_events({"type": "presence.diff", "group": "g", "joins": {"ada": [{"ref": "c1"}]},
    ...             "leaves": {}, "first": True})
    [{'type': 'presence.join', 'group': 'g', 'key': 'ada', 'meta': {'ref': 'c1'}}]
    """
    events = []
    for flag, side, kind in _SIDES:
        if not diff.get(flag):
            continue
        for key, metas in (diff.get(side) or {}).items():
            meta = metas[0] if metas else {}
            events.append({"type": kind, "group": diff.get("group"), "key": key, "meta": meta})
    return events
