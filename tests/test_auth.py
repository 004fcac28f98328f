"""Tokens survive: rotation stored before use, one refresh for two processes, a kill during
a token write leaves the old or the new token, and no token value reaches a log."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from connector.auth import (
    RotatingRefreshToken,
    TokenEndpoint,
    TokenFile,
    TokenSet,
    authorization_url,
    exchange_code,
    import_refresh_token,
)
from connector.errors import ConfigError, ReauthRequiredError
from connector.sandbox import build_app, fortnox_of
from connector.sandbox.app import SandboxApp
from connector.sandbox.fortnox import AUTH
from connector.sandbox.server import SandboxServer, transport
from connector.targets.fortnox.oauth import APP as FORTNOX_APP
from tests.conftest import REPO, connector_env


def endpoint(app: SandboxApp, secret: str = "sandbox") -> TokenEndpoint:
    http = httpx.Client(transport=transport(app), base_url="http://sandbox.test")
    return TokenEndpoint(
        f"http://sandbox.test{AUTH}/token",
        "sandbox",
        SecretStr(secret),
        http=http,
        app=FORTNOX_APP,
        setting="CONNECTOR_FORTNOX__",
    )


def test_authorization_url() -> None:
    url = authorization_url(
        FORTNOX_APP, "https://apps.fortnox.se/oauth-v1", "cid", "http://localhost/cb", "st"
    )
    assert url == (
        "https://apps.fortnox.se/oauth-v1/auth?client_id=cid&redirect_uri=http%3A%2F%2Flocalhost"
        "%2Fcb&scope=invoice+article+customer+companyinformation+settings&state=st"
        "&access_type=offline&response_type=code"
    )
    service = authorization_url(
        FORTNOX_APP,
        "https://apps.fortnox.se/oauth-v1",
        "cid",
        "http://localhost/cb",
        "st",
        service_account=True,
    )
    # Fortnox: "You have to use account_type=service for the consent to be created".
    assert service == url + "&account_type=service"


def test_code_exchange_then_rotation_stored_before_use(tmp_path: Path) -> None:
    app = build_app()
    fake = fortnox_of(app)
    store = TokenFile(tmp_path / "token.json")
    first = exchange_code(endpoint(app), store, fake.issue_code(), "http://localhost/cb")
    assert store.read() == first and first.refresh_token in fake.refresh_tokens
    assert (tmp_path / "token.json").stat().st_mode & 0o777 == 0o600
    fake.expire_tokens()
    store.write(TokenSet(first.access_token, 0.0, first.refresh_token))  # access expired
    tokens = RotatingRefreshToken(endpoint(app), store)
    access = tokens.token()
    stored = store.read()
    assert stored is not None and stored.access_token == access
    assert stored.refresh_token != first.refresh_token  # rotated, and stored
    assert first.refresh_token not in fake.refresh_tokens  # the old one is spent
    assert tokens.token() == access  # reused, no second refresh
    assert fake.token_grants == {"authorization_code": 1, "refresh_token": 1}


def test_invalid_grant_rereads_once_then_asks_for_login(tmp_path: Path) -> None:
    app = build_app()
    fake = fortnox_of(app)
    store = TokenFile(tmp_path / "token.json")
    import_refresh_token(store, "spent-token\n")
    with pytest.raises(ReauthRequiredError, match="run: connector auth login fortnox"):
        RotatingRefreshToken(endpoint(app), store).token()

    # Another process stored a fresh token without our lock: one re-read picks it up.
    class Racing(TokenFile):
        def read(self) -> TokenSet | None:
            found = super().read()
            if found and found.refresh_token == "spent-token":
                self.write(TokenSet("", 0.0, fake.seed_refresh_token()))
            return found

    racing = Racing(tmp_path / "token.json")
    import_refresh_token(racing, "spent-token")
    assert RotatingRefreshToken(endpoint(app), racing).token().startswith("sandbox-at-")


def test_wrong_client_secret_names_the_variables(tmp_path: Path) -> None:
    app = build_app()
    store = TokenFile(tmp_path / "token.json")
    import_refresh_token(store, fortnox_of(app).seed_refresh_token())
    with pytest.raises(ConfigError, match="CONNECTOR_FORTNOX__CLIENT_SECRET"):
        RotatingRefreshToken(endpoint(app, secret="wrong"), store).token()


def test_import_reads_standard_input_only_and_checks_the_token(
    tmp_path: Path, sandbox_app: SandboxApp, sandbox_server: SandboxServer
) -> None:
    """Found by a tester: a wrong paste replaced a working token and only the nightly run found
    out. The token is exchanged at once; a refused one leaves the stored one in place."""
    env = {**os.environ, **connector_env(sandbox_server.url, tmp_path)}
    env.pop("CONNECTOR_FORTNOX__TENANT_ID")
    seed = fortnox_of(sandbox_app).seed_refresh_token()

    def run_import(token: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "connector", "auth", "import", "fortnox"],
            input=token + "\n", env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    done = run_import(seed)
    assert done.returncode == 0, done.stderr
    assert seed not in done.stdout + done.stderr
    stored = TokenFile(tmp_path / "fortnox-token.json").read()
    assert stored is not None and stored.access_token  # exchanged: a working pair is stored
    refused = run_import("not-a-token")
    assert refused.returncode == 5
    assert "refused that refresh token" in refused.stderr and "kept" in refused.stderr
    assert TokenFile(tmp_path / "fortnox-token.json").read() == stored


REFRESHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import httpx
    from pydantic import SecretStr
    from connector.auth import RotatingRefreshToken, TokenEndpoint, TokenFile
    from connector.targets.fortnox.oauth import APP
    base, state, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    endpoint = TokenEndpoint(base + "/fortnox/oauth-v1/token", "sandbox", SecretStr("sandbox"),
                             http=httpx.Client(), app=APP, setting="CONNECTOR_FORTNOX__")
    tokens = RotatingRefreshToken(endpoint, TokenFile(state / "fortnox-token.json"))
    while not go.exists():
        time.sleep(0.005)
    print(tokens.token())
    """
)


def test_two_processes_refreshing_at_once_make_one_refresh(
    tmp_path: Path, sandbox_app: SandboxApp, sandbox_server: SandboxServer
) -> None:
    fake = fortnox_of(sandbox_app)
    store = TokenFile(tmp_path / "fortnox-token.json")
    store.write(TokenSet("expired", 0.0, fake.seed_refresh_token()))
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REFRESHER, sandbox_server.url, str(tmp_path), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    time.sleep(0.5)  # both are waiting at the start line
    go.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    first, second = (out.strip() for out, _ in outputs)
    assert first == second and first.startswith("sandbox-at-")
    assert fake.token_grants == {"refresh_token": 1}


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from connector.auth import TokenFile, TokenSet
    store = TokenFile(Path(sys.argv[1]))
    n = 0
    while True:
        n += 1
        store.write(TokenSet(f"access-{n}", float(n), f"refresh-{n}"))
        if n == 1:
            print("ready", flush=True)
    """
)


def test_kill_during_token_writes_leaves_a_whole_token(tmp_path: Path) -> None:
    path = tmp_path / "fortnox-token.json"
    rng = random.Random(5)
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.01, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        stored = TokenFile(path).read()
        assert stored is not None
        n = int(stored.access_token.split("-")[1])
        assert stored == TokenSet(f"access-{n}", float(n), f"refresh-{n}")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".token-")]
    assert len(leftovers) <= 6  # a killed write may leave a temp file, never a broken token


def test_no_token_value_in_any_output(
    tmp_path: Path, sandbox_app: SandboxApp, sandbox_server: SandboxServer
) -> None:
    env = {
        **os.environ,
        **connector_env(sandbox_server.url, tmp_path / "state"),
        "CONNECTOR_FORTNOX__RATE_LIMIT": "100000/1",
    }
    fortnox_of(sandbox_app).window.limit = 100000
    runs = []
    for args in (["sync", "--json"], ["sync"], ["plan"]):
        runs.append(
            subprocess.run(
                [sys.executable, "-m", "connector", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                cwd=REPO,
            )
        )
    assert [r.returncode for r in runs] == [1, 1, 1]
    everything = "".join(r.stdout + r.stderr for r in runs)
    stored = json.loads((tmp_path / "state" / "fortnox-token.json").read_text())
    fake = fortnox_of(sandbox_app)
    for secret in [stored["access_token"], *fake.access_tokens, "sandbox-at-", "Bearer", "Basic "]:
        assert secret not in everything
    assert all(json.loads(line) for line in runs[0].stderr.splitlines())  # JSON log lines
