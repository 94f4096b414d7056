"""Backend credentials: per-role master secrets kept in an ignored file, per-authid tickets derived from them.

A ticket is HMAC-SHA256(role master secret, authid), so the router checks any authid
without a user table, and one machine can be given the ticket for its own authid only.
"""

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from components.mesh.errors import ConfigError

BACKEND_ROLES = ("tracker", "simulator", "analyzer", "orchestrator", "operator", "component", "compute", "solver",
                 "supervisor", "recorder", "exporter", "alerts", "notifier")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SECRETS_FILE = PROJECT_ROOT / ".crossbar" / "secrets.json"


def secrets_path(explicit=None):
    """The secrets file to use: the explicit path, NERVE_SECRETS_FILE, or the project's ignored default."""
    return Path(explicit or os.environ.get("NERVE_SECRETS_FILE") or DEFAULT_SECRETS_FILE)


def load_or_create(path):
    """Read the role master secrets, creating the file (mode 0600) or adding roles it lacks."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: when the router and a component start together, exactly one writes the file.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                json.dump({"roles": {role: secrets.token_hex(32) for role in BACKEND_ROLES}}, handle, indent=2)
    try:
        roles = json.loads(path.read_text())["roles"]
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"cannot read secrets file {path}: {error}; delete it to have a new one generated") from error
    missing = [role for role in BACKEND_ROLES if role not in roles]
    if missing:
        # A newer nerve added roles: extend the file, keeping every existing secret (and ticket) valid.
        roles.update({role: secrets.token_hex(32) for role in missing})
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"roles": roles}, handle, indent=2)
        os.replace(temporary, path)
        roles = json.loads(path.read_text())["roles"]
    return roles


def ticket_for(master_secret, authid):
    """The ticket that authid presents for the role whose master secret is given."""
    return hmac.new(master_secret.encode(), authid.encode(), hashlib.sha256).hexdigest()


def ticket_matches(master_secret, authid, ticket):
    """Whether ticket is the right one for authid, compared in constant time."""
    return hmac.compare_digest(ticket_for(master_secret, authid), str(ticket))
