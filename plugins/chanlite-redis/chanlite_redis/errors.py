"""Errors raised by the Redis layer, on top of chanlite's layer errors.

::

    chanlite.layers.LayerError
     +-- chanlite.layers.LayerUnavailable   (also ConnectionError)
          +-- RedisUnavailable               (Redis could not be reached in time)
               +-- RedisAuthError            (Redis or its sentinels refused the
                                              credentials, or want some)

:func:`layer_error` turns what redis-py raised into one of these, with a message that
says what to do about it.
"""

from __future__ import annotations

from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chanlite.layers import LayerError, LayerUnavailable


class RedisUnavailable(LayerUnavailable):
    """Redis could not be reached (refused, timed out, lost, or refused our credentials).

    Raised by ``send``, ``group_send``, ``group_add`` and friends during an outage instead
    of waiting for the server to return; the layer reconnects by itself, so the caller may
    simply retry later.
    """


class RedisAuthError(RedisUnavailable):
    """Redis refused the layer's credentials: a wrong password, or none given to a server
    that requires one. Retrying does not help; the layer URL needs the right password."""


class SentinelAuthError(RedisConnectionError):
    """The sentinels refused the layer's credentials for them (``sentinel_password``).

    Raised while finding the master, in place of what redis-py raised (a NOAUTH reply, or
    "No master found" listing each sentinel's refusal); its text says what is wrong.
    """


def sentinel_auth_problem(exc: BaseException) -> str | None:
    """What is wrong with the sentinels' credentials if *exc*, raised while asking the
    sentinels for the master, is their refusing them, else None."""
    text = str(exc)
    if "NOAUTH" in text or "Authentication required" in text:
        return (
            "has sentinels that require a password and the layer URL gives none; add "
            "?sentinel_password=PASSWORD (the sentinels' own, which may differ from the "
            "servers' password in the URL)"
        )
    if "without any password configured" in text:
        return (
            "has sentinels with no password set but the layer URL gives one; "
            "remove sentinel_password"
        )
    if isinstance(exc, AuthenticationError) or "AuthenticationError" in text:
        return (
            "has sentinels that refused the sentinel password (wrong sentinel_password, "
            "or wrong sentinel_username)"
        )
    return None


def auth_problem(exc: BaseException) -> str | None:
    """What is wrong with the credentials if *exc* is Redis refusing them, else None."""
    if isinstance(exc, SentinelAuthError):
        return str(exc)
    text = str(exc)
    if "unauthenticated" in text or "NOAUTH" in text or "Authentication required" in text:
        # A server with requirepass answers the first command of a client that sent no
        # AUTH with NOAUTH, or closes on it ("unauthenticated multibulk length") when the
        # command is large, as a script call is.
        return (
            "requires a password and the layer URL gives none; "
            "put it in the URL: redis://:PASSWORD@host:port/db"
        )
    if isinstance(exc, AuthenticationError) or "WRONGPASS" in text:
        if "without any password configured" in text:
            return "has no password set but the layer URL gives one; remove it from the URL"
        return "refused the password (wrong password, or wrong user name) in the layer URL"
    return None


def layer_error(what: str, where: str, exc: BaseException) -> LayerError:
    """The layer error for *exc*, raised by redis-py while doing *what* at *where*."""
    problem = auth_problem(exc)
    if problem is not None:
        return RedisAuthError(f"{what}: Redis at {where} {problem}")
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
        return RedisUnavailable(
            f"{what}: Redis at {where} is unreachable ({exc}); "
            "the layer reconnects by itself, retry later"
        )
    if isinstance(exc, RedisError):
        return LayerError(f"{what}: Redis at {where} answered an error: {exc}")
    return LayerError(f"{what}: {exc}")
