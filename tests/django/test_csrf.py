"""Django's CSRF check guards chanlite's HTTP routes in a Django site, as it guards views."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from chanlite.testing import TestClient
from tests.django.test_inprocess import make_user, run_sync, session_cookie_for

pytestmark = pytest.mark.timeout(30)

EVIL = {"origin": "https://evil.example"}


@pytest.fixture
def ran(site: Any) -> list[str]:
    from cl_testsite import realtime

    realtime.ran.clear()
    return realtime.ran


async def victim_cookie() -> str:
    return str(await run_sync(session_cookie_for, await run_sync(make_user)))


def csrf_pair() -> tuple[str, str]:
    """(cookie secret, masked token for the form or header), made by Django itself."""
    from django.http import HttpRequest
    from django.middleware.csrf import get_token

    request = HttpRequest()
    token = get_token(request)
    return str(request.META["CSRF_COOKIE"]), str(token)


async def test_cross_site_post_with_the_session_cookie_is_refused(
    client: TestClient, ran: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    cookie = await victim_cookie()
    with caplog.at_level(logging.WARNING, logger="django.security.csrf"):
        response = await client.post(
            "/api/note", data={"text": "pwned"}, headers=EVIL, cookies={"sessionid": cookie}
        )
    assert response.status_code == 403
    assert "CSRF verification failed" in response.text
    assert ran == []  # the handler never ran in the victim's name
    assert any("evil.example" in r.getMessage() for r in caplog.records)
    # The very same request to a Django view gets the very same answer.
    django_view = await client.post(
        "/change/", data={"text": "pwned"}, headers=EVIL, cookies={"sessionid": cookie}
    )
    assert django_view.status_code == 403


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_unsafe_methods_without_a_token_are_refused(
    client: TestClient, ran: list[str], method: str
) -> None:
    # No Origin (not a browser, or an old one) and no token: the token check refuses.
    response = await client.request(method, "/api/note", cookies={"sessionid": "x"})
    assert response.status_code == 403
    assert ran == []


async def test_token_in_a_header_lets_a_same_site_post_through(
    client: TestClient, ran: list[str]
) -> None:
    cookie = await victim_cookie()
    secret, token = csrf_pair()
    response = await client.post(
        "/api/note",
        json={"some": "payload"},
        headers={"origin": "http://testserver", "x-csrftoken": token},
        cookies={"sessionid": cookie, "csrftoken": secret},
    )
    assert response.status_code == 200
    assert response.json()["authenticated"] is True
    assert response.json()["size"] == len(b'{"some":"payload"}')  # the body reached the handler
    assert ran == ["note"]


async def test_token_in_the_form_and_a_large_body_reach_the_handler(
    client: TestClient, ran: list[str]
) -> None:
    from django.test import override_settings

    secret, token = csrf_pair()
    text = "x" * 300_000
    # The body is spooled to disk past FILE_UPLOAD_MAX_MEMORY_SIZE, then replayed whole.
    with override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=1024, DATA_UPLOAD_MAX_MEMORY_SIZE=None):
        response = await client.post(
            "/api/note",
            data={"csrfmiddlewaretoken": token, "text": text},
            cookies={"csrftoken": secret},
        )
    assert response.status_code == 200
    assert response.json()["text"] == text
    assert ran == ["note"]


async def test_wrong_token_is_refused(client: TestClient, ran: list[str]) -> None:
    secret, _ = csrf_pair()
    _, other = csrf_pair()
    response = await client.post(
        "/api/note", data={"csrfmiddlewaretoken": other}, cookies={"csrftoken": secret}
    )
    assert response.status_code == 403
    assert ran == []


async def test_token_kept_in_the_session(client: TestClient, ran: list[str]) -> None:
    from django.test import override_settings

    def session_with_token() -> tuple[str, str]:
        from django.contrib.sessions.backends.db import SessionStore
        from django.middleware.csrf import CSRF_SESSION_KEY

        secret, token = csrf_pair()
        store = SessionStore()
        store[CSRF_SESSION_KEY] = secret
        store.save()
        return str(store.session_key), token

    with override_settings(CSRF_USE_SESSIONS=True):
        key, token = await run_sync(session_with_token)
        response = await client.post(
            "/api/note", headers={"x-csrftoken": token}, cookies={"sessionid": key}
        )
        assert response.status_code == 200
        refused = await client.post("/api/note", cookies={"sessionid": key})
        assert refused.status_code == 403
    assert ran == ["note"]


async def test_oversized_form_is_djangos_400(client: TestClient, ran: list[str]) -> None:
    from django.test import override_settings

    secret, token = csrf_pair()
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100):
        response = await client.post(
            "/api/note",
            data={"csrfmiddlewaretoken": token, "text": "x" * 1000},
            cookies={"csrftoken": secret},
        )
    assert response.status_code == 400
    assert ran == []


@pytest.mark.parametrize("path", ["/api/hook", "/api/ahook"])
async def test_csrf_exempt_routes_opt_out(client: TestClient, ran: list[str], path: str) -> None:
    # Django's own @csrf_exempt, on a plain def (run on a thread) and on a coroutine.
    response = await client.post(path, content=b"ping", headers=EVIL)
    assert response.status_code == 200
    assert ran == [path.rsplit("/", 1)[1]]


async def test_safe_methods_need_no_token(client: TestClient) -> None:
    cookie = await victim_cookie()
    response = await client.get("/api/me", headers=EVIL, cookies={"sessionid": cookie})
    assert response.status_code == 200
    assert response.json()["authenticated"] is True
