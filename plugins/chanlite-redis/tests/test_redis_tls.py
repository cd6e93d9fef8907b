"""``rediss://``: the layer over TLS to a redis-server that speaks only TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chanlite.layers import get_layer

WAIT = 5.0


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "redis.crt", directory / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_rediss_url_sends_and_broadcasts_over_tls(
    unstarted_redis: Any, tmp_path: Path, prefix: str
) -> None:
    cert, key = _self_signed(tmp_path)
    unstarted_redis.start(tls=(cert, key))
    url = f"rediss://127.0.0.1:{unstarted_redis.port}/0?ssl_ca_certs={cert}&prefix={prefix}"
    one, two = get_layer(url), get_layer(url)
    try:
        channel = await one.new_channel()
        await one.group_add("secure", channel)
        await two.group_send("secure", {"type": "over.tls"})
        got, message = await asyncio.wait_for(one.receive_local(), WAIT)
        assert (list(got), message) == ([channel], {"type": "over.tls"})
        await two.send(channel, {"type": "direct.tls"})
        assert (await asyncio.wait_for(one.receive(channel), WAIT))["type"] == "direct.tls"
    finally:
        await one.close()
        await two.close()
