"""TLS: the router serves https, wss and rss with a development certificate clients verify against its CA."""

import ssl
import urllib.request

import pytest
import pytest_twisted

from components.testing.live import RouterProcess, join
from components.node.tls import development_certificates


@pytest.fixture(scope="module")
def tls_router(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tls")
    files = development_certificates(workdir / "certs")
    router = RouterProcess(workdir, tls=files).start()
    yield router, files
    router.stop()


def test_https_page_verifies_against_the_generated_ca(tls_router):
    router, files = tls_router
    context = ssl.create_default_context(cafile=str(files.ca_certificate))
    with urllib.request.urlopen(f"https://127.0.0.1:{router.port}/", context=context, timeout=10) as response:
        assert response.status == 200 and b"<html" in response.read().lower()
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"https://127.0.0.1:{router.port}/", context=ssl.create_default_context(), timeout=10)


@pytest_twisted.inlineCallbacks
def test_wss_and_rss_sessions_verify_against_the_generated_ca(tls_router):
    router, files = tls_router
    dashboard = yield join(f"wss://127.0.0.1:{router.port}/ws", ca_file=files.ca_certificate)
    assert dashboard.nerve_details.authrole == "dashboard"
    yield dashboard.leave()
    tracker = yield join(f"rss://127.0.0.1:{router.port}", "tracker", "tls-host", router.ticket("tracker", "tls-host"),
                         ca_file=files.ca_certificate)
    assert tracker.nerve_details.authid == "tls-host"
    yield tracker.leave()


@pytest_twisted.inlineCallbacks
def test_an_untrusted_certificate_is_refused(tls_router):
    router, _ = tls_router
    with pytest.raises(Exception):
        yield join(f"wss://127.0.0.1:{router.port}/ws")
