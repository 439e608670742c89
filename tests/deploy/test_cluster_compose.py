"""docker-compose.cluster.yml: three NATS nodes, and every container knows all three."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from botbus.connect import server_list
from botbus.natsserver import find_nats_server

from . import compose
from .test_compose import issued, sandbox_env

CLUSTER_FILE = compose.REPO / "docker-compose.cluster.yml"
NODES = ("nats", "nats-2", "nats-3")
CLIENTS = ("gateway", "echo", "search", "alerts", "games", "sentiment")


def merged(env: dict[str, str]) -> dict[str, Any]:
    """``-f docker-compose.yml -f docker-compose.cluster.yml``, merged as compose does.

    Mappings merge key by key (environment), volumes by their target path,
    anything else in the override replaces the base.
    """
    base = compose.load(env)
    override = compose.load(env, CLUSTER_FILE)
    services: dict[str, Any] = base["services"]
    for name, spec in override["services"].items():
        into = services.setdefault(name, {})
        for key, value in spec.items():
            if key == "environment":
                into[key] = {**into.get(key, {}), **value}
            elif key == "volumes":
                by_target = {v.split(":")[1]: v for v in into.get(key, [])}
                by_target.update({v.split(":")[1]: v for v in value})
                into[key] = list(by_target.values())
            else:
                into[key] = value
    return {"services": services, "volumes": {**base["volumes"], **override["volumes"]}}


def test_three_nodes_each_with_its_name_and_store() -> None:
    services = merged(sandbox_env())["services"]
    names = {services[n]["environment"]["BOTBUS_NATS_NODE"] for n in NODES}
    assert names == set(NODES)
    stores = {
        v.split(":")[0] for n in NODES for v in services[n]["volumes"] if v.endswith(":/data")
    }
    assert len(stores) == 3
    for node in NODES:
        assert "/etc/nats/nats.conf" in " ".join(services[node]["volumes"])
        assert "nats-cluster.conf" in " ".join(services[node]["volumes"])


def test_every_botbus_container_connects_with_all_three_nodes() -> None:
    services = merged(sandbox_env())["services"]
    for name in CLIENTS:
        urls = server_list(services[name]["environment"]["NATS_URL"])
        assert [u.split("//")[1].split(":")[0] for u in urls] == list(NODES), name
        assert services[name]["environment"]["BOTBUS_NATS_CREDS"]  # kept from the base


def test_new_nodes_require_the_same_identities() -> None:
    env = sandbox_env()
    env["BOTBUS_AUTH_DIR"] = ""
    with pytest.raises(compose.ComposeError, match="BOTBUS_AUTH_DIR"):
        compose.load(env, CLUSTER_FILE)
    services = merged(sandbox_env())["services"]
    for node in NODES:
        assert any(
            v.endswith("/auth.conf:/etc/nats/auth.conf:ro") for v in services[node]["volumes"]
        )


def test_node_config_is_valid_for_nats_server(tmp_path: Path) -> None:
    """Mounted as the compose file mounts it, nats-server accepts the node config."""
    env = {**sandbox_env(), **issued(tmp_path / "auth")}
    services = merged(env)["services"]
    for volume in services["nats-2"]["volumes"]:
        source, target = volume.split(":")[:2]
        if target.startswith("/etc/nats/"):
            shutil.copy(compose.REPO / source, tmp_path / Path(target).name)
    env = {**os.environ, **services["nats-2"]["environment"]}
    checked = subprocess.run(
        [str(find_nats_server()), "-t", "-c", str(tmp_path / "nats.conf")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
