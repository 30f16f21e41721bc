"""The address guard: private, loopback, link-local and reserved addresses refused after resolution and on
every redirect. This is the one test module that runs with the guard on (allow_private_hosts=False)."""

import datetime
import importlib.util
import ssl
from pathlib import Path

import pytest

from interleaf.download.fetcher import FetchConfig, Fetcher
from interleaf.download.netguard import GuardError, refusal, resolve

_spec = importlib.util.spec_from_file_location("fetch_servers",
                                               Path(__file__).with_name("test_fetch_servers.py"))
servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(servers)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
    "100.64.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fe80::1%2",
    "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::1", "2001:db8::1",
])
def test_refused_addresses(address):
    assert refusal(address) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address):
    assert refusal(address) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "0x7f.1", "::1"])
def test_resolution_is_checked_not_the_name(host):
    # numeric forms and /etc/hosts names resolve locally: no DNS query leaves the machine
    with pytest.raises(GuardError) as e:
        resolve("http", host, 8080, allow_private=False)
    assert e.value.status == "private_address"


def test_allow_private_and_allowed_networks():
    assert resolve("http", "127.0.0.1", 80, allow_private=True).address == "127.0.0.1"
    target = resolve("https", "localhost", None, allow_private=False, allowed_networks=("127.0.0.0/8",))
    assert (target.address, target.port, target.host) == ("127.0.0.1", 443, "localhost")


def test_schemes():
    with pytest.raises(GuardError) as e:
        resolve("ftp", "127.0.0.1", None, allow_private=True)
    assert e.value.status == "unsupported_scheme"
    with pytest.raises(GuardError) as e:
        resolve("http", "", None, allow_private=True)
    assert e.value.status == "dns"


@pytest.fixture(scope="module")
def hostile():
    server = servers.HostileServer()
    yield server
    server.close()


def test_guard_on_refuses_a_loopback_server_before_any_request(hostile):
    fetcher = Fetcher(FetchConfig(total_timeout_s=2.0))
    try:
        for url in (f"{hostile.base}/ok/a.jpg", f"http://localhost:{hostile.port}/ok/b.jpg",
                    f"http://[::ffff:127.0.0.1]:{hostile.port}/ok/c.jpg"):
            record = fetcher.fetch(url).record
            assert record.status == "private_address", (url, record.error)
    finally:
        fetcher.close()
    assert sum(hostile.hits.values()) == 0  # not even robots.txt was requested


@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://10.0.0.7/x.jpg",
    "http://[::1]:{port}/ok/a.jpg",
    "http://192.168.0.1:{port}/ok/a.jpg",
])
def test_redirect_to_a_private_address_is_refused(hostile, target):
    # The first hop is let through by allowed_networks (the test server must be reachable); the guard stays
    # on for everything else, and the refused target is never connected to.
    fetcher = Fetcher(FetchConfig(total_timeout_s=2.0, allowed_networks=("127.0.0.1/32",)))
    before = dict(hostile.hits)
    try:
        record = fetcher.fetch(f"{hostile.base}/redirect?to={target.format(port=hostile.port)}").record
    finally:
        fetcher.close()
    assert record.status == "private_address", record.error
    assert "redirect to" in record.error
    new = {k: v - before.get(k, 0) for k, v in hostile.hits.items() if v != before.get(k, 0)}
    assert set(new) <= {"/robots.txt", "/.well-known/tdmrep.json",  # consent files of the first host
                        f"/redirect?to={target.format(port=hostile.port)}"}


# ---------------------------------------------------------------- HTTPS over a pinned connection


def _self_signed(tmp_path, name: str):
    """A self-signed certificate for `name` (its own CA) and its key, as PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


@pytest.fixture
def https_server(tmp_path):
    """The hostile server's endpoints over TLS, with a certificate for the name "localhost"."""
    cert, key = _self_signed(tmp_path, "localhost")
    server = servers.HostileServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    yield server, cert, _self_signed(tmp_path, "other.example")[0]
    server.close()


def test_https_is_verified_against_the_url_host(https_server):
    server, cert, other_ca = https_server
    url = f"https://localhost:{server.port}/ok/a.jpg"
    results = {}
    for name, ca_file in (("trusted", cert), ("unknown CA", None), ("wrong CA", other_ca)):
        fetcher = Fetcher(FetchConfig(allow_private_hosts=True, total_timeout_s=3.0, ca_file=ca_file))
        try:
            results[name] = fetcher.fetch(url).record
        finally:
            fetcher.close()
    assert results["trusted"].status == "ok", results["trusted"].error
    for name in ("unknown CA", "wrong CA"):
        assert results[name].status == "connect" and "certificate" in results[name].error.lower()
    # the pinned address is 127.0.0.1, yet the certificate was checked for "localhost": a fetch by address
    # fails the name check
    fetcher = Fetcher(FetchConfig(allow_private_hosts=True, total_timeout_s=3.0, ca_file=cert))
    try:
        by_ip = fetcher.fetch(f"https://127.0.0.1:{server.port}/ok/a.jpg").record
    finally:
        fetcher.close()
    assert by_ip.status == "connect" and "certificate" in by_ip.error.lower()
