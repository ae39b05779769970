"""A QUIC server or client built on aioquic, for udptrace's tests.

    quic_peer.py server HOST PORT VERSION   serve until stdin closes
    quic_peer.py client HOST PORT VERSION SNI   connect, ping, close

VERSION is 1 or 2 (QUIC v1 or v2). The server prints "ready" once it
listens. Each prints, last, one JSON line: the long-header packets it sent,
as its qlog recorded them (packet_type, dcid, scid), and its pid.
"""

import asyncio
import datetime
import json
import os
import ssl
import sys
import tempfile

from aioquic.asyncio import connect, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.logger import QuicLogger
from aioquic.quic.packet import QuicProtocolVersion
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VERSIONS = {"1": QuicProtocolVersion.VERSION_1, "2": QuicProtocolVersion.VERSION_2}
ALPN = ["udptrace-test", "h3"]


def self_signed(directory):
    """A certificate and key for the server, written to files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "udptrace test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def long_header_packets_sent(logger):
    """The long-header packets the qlog says this end sent."""
    sent = []
    for trace in logger.to_dict()["traces"]:
        for event in trace["events"]:
            if event["name"] != "transport:packet_sent":
                continue
            header = event["data"]["header"]
            if header["packet_type"] == "1RTT":
                continue
            sent.append(
                {
                    "packet_type": header["packet_type"],
                    "dcid": header["dcid"],
                    "scid": header["scid"],
                }
            )
    return sent


def report(logger):
    print(json.dumps({"pid": os.getpid(), "sent": long_header_packets_sent(logger)}))
    sys.stdout.flush()


async def run_server(host, port, version):
    logger = QuicLogger()
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=ALPN,
        quic_logger=logger,
        supported_versions=[version],
    )
    with tempfile.TemporaryDirectory() as directory:
        config.load_cert_chain(*self_signed(directory))
    server = await serve(host, port, configuration=config)
    print("ready")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()
    report(logger)


async def run_client(host, port, version, sni):
    logger = QuicLogger()
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=ALPN,
        quic_logger=logger,
        server_name=sni,
        verify_mode=ssl.CERT_NONE,
        supported_versions=[version],
    )
    async with connect(host, port, configuration=config) as client:
        await client.ping()
    report(logger)


def main():
    role, host, port, version = sys.argv[1:5]
    if role == "server":
        asyncio.run(run_server(host, int(port), VERSIONS[version]))
    else:
        asyncio.run(run_client(host, int(port), VERSIONS[version], sys.argv[5]))


if __name__ == "__main__":
    main()
