"""Real servers a notifier delivers to, for tests and benches: a webhook receiver that can go down and come back,
an SMTP server (aiosmtpd, with STARTTLS and a login), and an Alertmanager process (Debian prometheus-alertmanager).
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from twisted.internet import reactor as default_reactor
from twisted.protocols.policies import WrappingFactory
from twisted.web import resource, server

from components.node.routerctl import free_port, wait_for_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


class _Hook(resource.Resource):
    isLeaf = True

    def __init__(self, receiver):
        super().__init__()
        self.receiver = receiver

    def render_POST(self, request):
        body = json.loads(request.content.read() or b"null")
        self.receiver.received(request.path.decode(), body)
        return b"{}"


class WebhookReceiver:
    """An HTTP server in this process's reactor that keeps every JSON body POSTed to it, with arrival times.

    `down()` closes the port and cuts open connections (the channel is unreachable); `up()` listens again on the
    same port."""

    def __init__(self, port=None, reactor=default_reactor):
        self.reactor = reactor
        self.port = port or free_port()
        self.messages = []  # (monotonic arrival, path, body)
        # WrappingFactory keeps every open connection, so an outage can cut the kept-alive ones too.
        self.factory = WrappingFactory(server.Site(_Hook(self)))
        self.listening = None
        self.up()

    @property
    def url(self):
        """http://127.0.0.1:PORT/hook"""
        return f"http://127.0.0.1:{self.port}/hook"

    def received(self, path, body):
        self.messages.append((time.monotonic(), path, body))

    def up(self):
        """Listen (again)."""
        if self.listening is None:
            self.listening = self.reactor.listenTCP(self.port, self.factory, interface="127.0.0.1")

    def down(self):
        """Stop listening and drop every open connection; a Deferred that fires once the port is closed."""
        listening, self.listening = self.listening, None
        for wrapper in list(self.factory.protocols):
            wrapper.transport.abortConnection()
        return listening.stopListening() if listening is not None else None

    def alerts(self):
        """Every alert of every message, in arrival order."""
        return [alert for _, _, body in self.messages for alert in (body or {}).get("alerts", [])]

    def keys(self):
        """The de-duplication keys received, in arrival order (a key twice: a duplicate)."""
        return [alert["key"] for alert in self.alerts()]


class SmtpReceiver:
    """An aiosmtpd server in a thread keeping every mail; with tls (TlsFiles) it offers STARTTLS and requires it and
    the login (username, password) before mail."""

    def __init__(self, tls=None, login=None, port=None):
        import ssl

        from aiosmtpd.controller import Controller

        self.port = port or free_port()
        self.mails = []  # (envelope sender, recipients, message bytes)
        self.logins = []
        context = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls.certificate), str(tls.key))
        options = {}
        if login is not None:
            options.update(authenticator=self._authenticator(login), auth_require_tls=tls is not None,
                           auth_required=True)
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, tls_context=context,
                                     require_starttls=tls is not None, **options)
        self.controller.start()

    def _authenticator(self, login):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        def authenticate(server_, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and (auth_data.login.decode(), auth_data.password.decode()) == login
            if ok:
                self.logins.append((mechanism, auth_data.login.decode(), session.ssl is not None))
            return AuthResult(success=ok)

        return authenticate

    async def handle_DATA(self, server_, session, envelope):
        """aiosmtpd's hook: keep the mail."""
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 OK"

    def stop(self):
        """Stop the server thread."""
        self.controller.stop()


class AlertmanagerProcess:
    """A real Alertmanager on a free port with a minimal config and its own storage directory."""

    CONFIG = "route:\n  receiver: nobody\n  group_wait: 1h\nreceivers:\n  - name: nobody\n"

    def __init__(self, workdir=None):
        if ALERTMANAGER is None:
            raise RuntimeError("prometheus-alertmanager is not installed (make test installs it)")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="nerve-alertmanager-"))
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "alertmanager.yml").write_text(self.CONFIG)
        self.log = open(self.workdir / "alertmanager.log", "wb")
        self.process = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={self.workdir / 'alertmanager.yml'}",
             f"--storage.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--cluster.listen-address="],  # no gossip port: one instance
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, self.process, timeout=30)

    @property
    def url(self):
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    def alerts(self):
        """GET /api/v2/alerts: the alerts Alertmanager holds (blocking; call it from a thread in a reactor)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as answer:
            return json.loads(answer.read())

    def stop(self):
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
