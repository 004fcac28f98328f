"""The production files in deploy/ and the Dockerfile hold what running the connector safely
needs: one run at a time, secrets from outside, the state on a kept volume, every setting
named one the connector knows."""

from __future__ import annotations

import configparser
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import yaml

from connector.settings import known_variables
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
STATE = "/var/lib/connector"


def unit(path: Path) -> configparser.RawConfigParser:
    # systemd allows a key more than once (SystemCallFilter=): keep every value, joined.
    class Multi(dict[str, Any]):
        def __setitem__(self, key: str, value: Any) -> None:
            if key in self and isinstance(value, list) and isinstance(self[key], list):
                self[key].extend(value)
            else:
                super().__setitem__(key, value)

    parser = configparser.RawConfigParser(strict=False, dict_type=Multi)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(path.read_text())
    return parser


def settings_named(text: str) -> set[str]:
    return set(re.findall(r"\bCONNECTOR_[A-Z0-9_]+", text))


def test_the_systemd_timer_runs_nightly_and_catches_up() -> None:
    timer = unit(DEPLOY / "systemd/connector-sync.timer")
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["OnCalendar"].endswith("02:15:00")
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_systemd_service_is_sandboxed_with_secrets_from_a_file() -> None:
    service = unit(DEPLOY / "systemd/connector-sync.service")["Service"]
    assert service["Type"] == "oneshot"
    assert shlex.split(service["ExecStart"])[-1:] == ["sync"]
    assert shlex.split(service["ExecStart"])[0].endswith("/connector")
    assert service["EnvironmentFile"].startswith("/etc/connector/")
    assert service["StateDirectory"] == "connector" and service["StateDirectoryMode"] == "0700"
    assert f"CONNECTOR_STATE_DIR={STATE}" in service["Environment"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
    }.items():
        assert service[key] == value, key
    assert service["SystemCallFilter"].split() == ["@system-service", "~@privileged", "@resources"]
    assert service["User"] != "root"


def test_the_cronjob_runs_one_at_a_time_with_secrets_and_a_kept_state() -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes/cronjob.yaml").read_text()))
    by_kind = {d["kind"]: d for d in documents}
    cron = by_kind["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["sync"]
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == ["connector-secrets"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CONNECTOR_STATE_DIR"] == STATE
    assert not settings_named(" ".join(env)) & {"CONNECTOR_LEDGER__TOKEN"}  # secrets via Secret
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts[STATE]]["persistentVolumeClaim"]["claimName"]
    assert by_kind["PersistentVolumeClaim"]["metadata"]["name"] == claim
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert (
        container["image"]
        == next(yaml.safe_load_all((DEPLOY / "kubernetes/shell-pod.yaml").read_text()))["spec"][
            "containers"
        ][0]["image"]
    )


def test_the_dockerfile_runs_connector_as_a_user_with_the_state_on_a_volume() -> None:
    text = (REPO / "Dockerfile").read_text()
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    instructions = [line.split(None, 1) for line in joined.splitlines() if line.strip()]
    final = instructions[max(i for i, (word, _) in enumerate(instructions) if word == "FROM") :]
    last = {word: rest for word, rest in final if word.isupper()}
    assert last["ENTRYPOINT"] == '["connector"]'
    assert last["CMD"] == '["sync"]'
    assert last["USER"].split(":")[0] not in ("0", "root")
    assert last["VOLUME"] == f'["{STATE}"]'
    assert f"CONNECTOR_STATE_DIR={STATE}" in text
    # What the build copies exists, and `connector` is the package's command.
    for word, rest in instructions:
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (REPO / source).exists(), source
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "connector" in project["project"]["scripts"]
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".git" in ignored and "README.md" not in ignored


def test_every_setting_named_in_deploy_is_one_the_connector_reads() -> None:
    named: set[str] = set()
    for path in [*DEPLOY.rglob("*"), REPO / "Dockerfile"]:
        if path.is_file():
            named |= settings_named(path.read_text())
    assert "CONNECTOR_NOTIFY__WEBHOOK_URL" in named
    assert named - known_variables() == set()
