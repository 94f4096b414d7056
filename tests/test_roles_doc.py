"""docs/architecture.md's roles table says exactly what .crossbar/config.json (and the tracker's authorizer) allows."""

import json
import re
from pathlib import Path

import pytest

from router import auth

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
CONFIG = ROOT / ".crossbar" / "config.json"
ACTIONS = ("publish", "subscribe", "call", "register")
HEADER = ["role", "how it joins", *ACTIONS]


def documented_roles(text):
    """{role: {action: {uri, ...}}} from the roles table; a URI ending in '*' is a prefix permission."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if _cells(line) == HEADER)
    except StopIteration:
        raise AssertionError(f"{DOC.name} has no roles table with the columns {' | '.join(HEADER)}") from None
    roles = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        assert len(cells) == len(HEADER), f"{DOC.name}: a roles row has {len(cells)} cells, not {len(HEADER)}: {line}"
        names = re.findall(r"`([^`]+)`", cells[0])
        assert len(names) == 1, f"{DOC.name}: the role cell must hold one `role`: {line}"
        assert names[0] not in roles, f"{DOC.name}: role '{names[0]}' has two rows"
        roles[names[0]] = {action: set(re.findall(r"`([^`]+)`", cell)) for action, cell in zip(ACTIONS, cells[2:])}
    return roles


def _cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else None


def configured_roles(config):
    """{role: {action: {uri, ...}}} of the realm's roles, in the table's notation."""
    roles = {}
    for realm in (worker for worker in config["workers"] if worker["type"] == "router"):
        for role in (role for realm_ in realm["realms"] for role in realm_["roles"]):
            allowed = {action: set() for action in ACTIONS}
            if "authorizer" in role:
                assert role["authorizer"] == auth.AUTHORIZE_URI and role["name"] == "tracker", \
                    f"role '{role['name']}' uses authorizer {role['authorizer']}, which this test does not know how to read"
                allowed = tracker_authorizer()
            for permission in role.get("permissions", []):
                match = permission.get("match", "exact")
                assert match in ("exact", "prefix"), \
                    f"role '{role['name']}': {match} match on {permission['uri']} has no notation in the table"
                uri = permission["uri"] + ("*" if match == "prefix" else "")
                for action in ACTIONS:
                    if permission["allow"].get(action):
                        allowed[action].add(uri)
            roles[role["name"]] = allowed
    return roles


def tracker_authorizer():
    """What router/auth.py's authorize_tracker allows, in the table's notation ({authid}: the tracker's own)."""
    allowed = {action: set() for action in ACTIONS}
    allowed["publish"].add(auth.MEASURE_PREFIX + "{authid}")
    for uri, action in auth.TRACKER_ROLE_WIDE:
        allowed[action].add(uri)
    # The table must match what the function really decides.
    assert auth.authorize_tracker({"authid": "h1"}, auth.MEASURE_PREFIX + "h1", "publish")["allow"]
    assert not auth.authorize_tracker({"authid": "h1"}, auth.MEASURE_PREFIX + "h2", "publish")
    return allowed


def differences(documented, configured):
    """Every disagreement, one readable line each."""
    found = []
    for role in sorted(set(documented) - set(configured)):
        found.append(f"role '{role}' is in {DOC.name}'s table but not in {CONFIG.name}")
    for role in sorted(set(configured) - set(documented)):
        found.append(f"role '{role}' is in {CONFIG.name} but missing from {DOC.name}'s table")
    for role in sorted(set(documented) & set(configured)):
        for action in ACTIONS:
            for uri in sorted(documented[role][action] - configured[role][action]):
                found.append(f"{DOC.name} says role '{role}' may {action} {uri}, but {CONFIG.name} does not allow it")
            for uri in sorted(configured[role][action] - documented[role][action]):
                found.append(f"{CONFIG.name} lets role '{role}' {action} {uri}, but {DOC.name} does not say so")
    return found


def test_the_roles_table_matches_the_router_config():
    found = differences(documented_roles(DOC.read_text()), configured_roles(json.loads(CONFIG.read_text())))
    assert not found, "docs/architecture.md's roles table and .crossbar/config.json differ:\n  " + "\n  ".join(found)


def test_the_comparison_names_each_difference():
    # The test above must be able to fail: a config that lets the dashboard solve, and a doc row that is missing.
    config = json.loads(CONFIG.read_text())
    dashboard = next(role for role in config["workers"][0]["realms"][0]["roles"] if role["name"] == "dashboard")
    dashboard["permissions"].append({"uri": "nerve.tsp.solve", "match": "exact", "allow": {"call": True}})
    documented = documented_roles(DOC.read_text())
    del documented["compute"]
    found = differences(documented, configured_roles(config))
    assert ".crossbar/config.json lets role 'dashboard' call nerve.tsp.solve, but architecture.md does not say so" \
        .replace(".crossbar/", "") in found
    assert "role 'compute' is in config.json but missing from architecture.md's table" in found


@pytest.mark.parametrize("role", ["dashboard"])
def test_anonymous_may_not_start_compute_or_read_sessions(role):
    allowed = configured_roles(json.loads(CONFIG.read_text()))[role]
    assert "nerve.tsp.solve" not in allowed["call"] and "nerve.router.stats" not in allowed["call"]
    assert not {uri for uris in allowed.values() for uri in uris if uri.startswith("wamp.session.")}


def test_the_security_doc_names_every_limit_of_the_router_guards():
    from pathlib import Path

    from router import guards

    doc = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    limits = [name for name in dir(guards) if name.isupper() and isinstance(getattr(guards, name), (int, float))
              and not name.startswith("_")]
    missing = [name for name in limits if name not in doc]
    assert limits and not missing, f"limits in router/guards.py that docs/security.md does not name: {missing}"
