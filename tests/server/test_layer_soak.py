"""The short form of the layer soak (``make soak`` runs the long one): two ``chanlite
run`` processes on a real redis-server that is killed and restarted mid-run, while
members churn, members that never read are closed and a ping flood runs. See
:mod:`tests.server.layer_soak` for what it asserts."""

from __future__ import annotations

import pytest

from tests.server.layer_soak import run

pytestmark = pytest.mark.timeout(180)


def test_messages_across_processes_survive_a_redis_restart_or_their_loss_is_logged() -> None:
    report = run(25.0, restarts=1, ceiling_mib=100.0)
    assert report["restarts"] == 1
    assert report["failed_sends"] > 0  # the outage was felt, and every failure reported
    assert report["counts"]["refused"] > 0  # joins during the outage: refused, not crashed
