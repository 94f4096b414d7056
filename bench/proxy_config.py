"""A Crossbar node config with proxy workers in front of the project's router worker.

    .venv/bin/python bench/proxy_config.py [--port 8080] [--proxies 2] [--auth dynamic|static] [--secrets FILE]

prints the node config as JSON. Built from the project's runtime config
(`components.node.routerctl.runtime_config`), it keeps the router worker's realm, roles and the
router-embedded `router.auth.AuthSession` (authenticator, tracker authorizer, nerve.router.stats),
but the router worker no longer listens on TCP: it listens on a unix-socket RawSocket that only
the proxy workers use (`anonymous-proxy` auth: the router trusts the realm, authid and role the
proxy forwards, which Crossbar allows only over a unix socket). N proxy workers
(`"type": "proxy"`) each run the project's public universal transport (RawSocket, WebSocket at
/ws, static web) on the same TCP port with `"shared": true` (SO_REUSEPORT, the kernel spreads
connections over the proxies), and route every role of the realm to the router's unix socket.

Authentication through the proxies:
- `--auth dynamic` (default): the proxy itself runs the ticket check and calls the project's
  dynamic authenticator `nerve.auth.authenticate` (registered in the router worker) over a
  service session it opens to the router. That service session needs a role the proxy routes
  and that may call the authenticator: the generated config adds the role `proxy-authenticator`
  (call on `nerve.auth.authenticate` only) to the realm and sets `"authenticator-role"` on the
  proxies' ticket config. Without `"authenticator-role"` the proxy uses the role the client
  asked for in HELLO (ours ask for none) and every ticket login is refused with
  `wamp.error.no_such_role: explicit role <None> on realm <nerve> configured for dynamic
  authenticator does not exist`.
- `--auth static`: static ticket principals at the proxy, one per (role, authid) given to
  `node_config(..., principals=...)`; only for a benchmark whose authids are known in advance.
- The anonymous dashboard role (WebSocket) is static and needs nothing extra; the tracker's
  dynamic authorizer runs in the router worker, which sees the forwarded authid and role.

Not carried over to the proxies: router/tuning.py's TCP_NODELAY for RawSocket is applied when
router.auth's session joins, i.e. only in the router worker; proxy workers run no project code, so
their public RawSocket connections keep Nagle on (a latency matter, not a throughput one).
"""

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.mesh import credentials  # noqa: E402
from components.node.routerctl import runtime_config  # noqa: E402

REALM = "nerve"
AUTHENTICATE_URI = "nerve.auth.authenticate"
PROXY_AUTH_ROLE = "proxy-authenticator"
SOCKET_NAME = "router.sock"


def _router_worker(config):
    return next(worker for worker in config["workers"] if worker["type"] == "router")


def _proxy_auth_role():
    """A role that may only call the authenticator: what a proxy's service session joins as."""
    return {"name": PROXY_AUTH_ROLE, "permissions": [{
        "uri": AUTHENTICATE_URI, "match": "exact",
        "allow": {"call": True, "register": False, "publish": False, "subscribe": False},
        "disclose": {"caller": False, "publisher": False}, "cache": True}]}


def _set_ticket_auth(transport, ticket_config):
    """Replace the ticket auth of the universal transport's rawsocket and websocket parts."""
    parts = [transport.get("rawsocket", {})] + list(transport.get("websocket", {}).values())
    for part in parts:
        auth = part.get("auth")
        if auth and "ticket" in auth:
            auth["ticket"] = copy.deepcopy(ticket_config)


def static_principals(role_secrets, principals):
    """Static ticket principals {authid: {"ticket", "role"}} for known (role, authid) pairs."""
    return {authid: {"ticket": credentials.ticket_for(role_secrets[role], authid), "role": role}
            for role, authid in principals}


def node_config(port, secrets_file=None, proxies=2, socket_path=None, auth="dynamic", principals=(),
                authenticator_role=PROXY_AUTH_ROLE, backend_serializer="msgpack"):
    """The node config: router worker on a unix socket, `proxies` proxy workers sharing TCP `port`.

    auth: "dynamic" (the project's authenticator, called by the proxies) or "static" (ticket
    principals for `principals`, a list of (role, authid)). authenticator_role: the role the proxies'
    service session calls the authenticator as (PROXY_AUTH_ROLE is added to the realm; None leaves
    "authenticator-role" out, to show the refusal that causes). proxies=0 gives the plain project config.
    """
    config = runtime_config(port, secrets_file)
    if proxies == 0:
        return config
    router = _router_worker(config)
    public = router["transports"][0]
    socket_path = str(socket_path or Path(secrets_file or ".").resolve().parent / SOCKET_NAME)

    realm = next(realm for realm in router["realms"] if realm["name"] == REALM)
    # every client role goes through the proxies; "authenticator" is only the router-embedded component's
    roles = [role["name"] for role in realm["roles"] if role["name"] != "authenticator"]
    if auth == "dynamic" and authenticator_role == PROXY_AUTH_ROLE:
        realm["roles"].append(_proxy_auth_role())
        roles.append(PROXY_AUTH_ROLE)

    # The router worker: the same realm, roles and embedded components, reachable only by the proxies.
    router["transports"] = [{
        "type": "rawsocket", "id": "proxies",
        "endpoint": {"type": "unix", "path": socket_path},
        "serializers": ["cbor", "msgpack", "json"],
        "options": {"max_message_size": 8388608},
        "auth": {"anonymous-proxy": {"type": "static"}},
    }]

    frontend = copy.deepcopy(public)
    frontend["endpoint"]["shared"] = True
    if auth == "dynamic":
        ticket = {"type": "dynamic", "authenticator": AUTHENTICATE_URI}
        if authenticator_role:
            ticket["authenticator-role"] = authenticator_role
    elif auth == "static":
        role_secrets = credentials.load_or_create(credentials.secrets_path(secrets_file))
        ticket = {"type": "static", "principals": static_principals(role_secrets, principals)}
    else:
        raise ValueError(f"auth must be 'dynamic' or 'static', got {auth!r}")
    _set_ticket_auth(frontend, ticket)

    connection = {
        "transport": {"type": "rawsocket", "endpoint": {"type": "unix", "path": socket_path},
                      "url": "rs://localhost", "serializer": backend_serializer},
        "auth": {"anonymous-proxy": {"type": "static"}},
    }
    for index in range(proxies):
        transport = copy.deepcopy(frontend)
        transport["id"] = f"public{index + 1}"
        config["workers"].append({
            "type": "proxy",
            "id": f"proxy{index + 1}",
            "options": {},
            "transports": [transport],
            "routes": {REALM: {role: "router" for role in roles}},
            "connections": {"router": copy.deepcopy(connection)},
        })
    return config


def write_node_cbdir(cbdir, port, secrets_file=None, **options):
    """Write cbdir/config.json for node_config(port, ...) and return cbdir (the socket goes in cbdir)."""
    cbdir = Path(cbdir)
    cbdir.mkdir(parents=True, exist_ok=True)
    stale_pid = cbdir / "node.pid"
    if stale_pid.exists():
        stale_pid.unlink()
    options.setdefault("socket_path", cbdir / SOCKET_NAME)
    (cbdir / "config.json").write_text(json.dumps(node_config(port, secrets_file, **options), indent=2))
    return cbdir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--proxies", type=int, default=2)
    parser.add_argument("--auth", choices=["dynamic", "static"], default="dynamic")
    parser.add_argument("--secrets", help="secrets file the router's authenticator reads")
    parser.add_argument("--socket", help="unix socket path between proxies and router (default: next to the secrets)")
    parsed = parser.parse_args()
    print(json.dumps(node_config(parsed.port, parsed.secrets, parsed.proxies, parsed.socket, parsed.auth), indent=2))
