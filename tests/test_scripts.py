"""The service scripts as a user runs them: what they print, and how they fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import SCRIPTS, WeaviateServer, needs_postgres, process_gone

debian_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("pg_createcluster"),
    reason="scripts/postgres.sh runs its own cluster only as root on Debian",
)


def script(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env if env is not None else dict(os.environ),
    )


def test_without_go_weaviate_sh_says_in_one_line_what_is_missing(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bash", "dirname", "mkdir", "python3", "flock", "cat", "rm"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found:
            (bare / tool).symlink_to(found)
    env = {"PATH": str(bare), "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = script("weaviate.sh", "start", env=env)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Go is not installed" in lines[0] and "WEAVIATE_URL" in lines[0]


def test_weaviate_sh_prints_only_eval_able_lines_and_a_second_start_changes_nothing(
    weaviate_server: WeaviateServer,
) -> None:
    weaviate_server.api_key = "k3y-for-the-script-test"
    weaviate_server.start()
    data = str(weaviate_server.data)
    again = script("weaviate.sh", "start", "--data", data)
    url = script("weaviate.sh", "url", "--data", data)
    expected = (
        f"WEAVIATE_URL={weaviate_server.url}\n"
        f"EXPERTBOT_KNOWLEDGE__WEAVIATE__GRPC_URL={weaviate_server.grpc_url}\n"
        "WEAVIATE_API_KEY=k3y-for-the-script-test\n"
    )
    assert again.stdout == url.stdout == expected
    assert "already running" in again.stderr
    pid = weaviate_server.pid

    stopped = script("weaviate.sh", "stop", "--data", data)
    assert stopped.returncode == 0 and stopped.stdout == ""
    gone = script("weaviate.sh", "url", "--data", data)
    assert gone.returncode == 1 and gone.stdout == "" and "no Weaviate is running" in gone.stderr
    assert process_gone(pid)


@pytest.mark.skipif(not shutil.which("pg_isready"), reason="needs PostgreSQL's pg_isready")
def test_postgres_sh_checks_a_named_server_and_fails_in_one_line_when_it_does_not_answer(
    tmp_path: Path,
) -> None:
    env = dict(os.environ) | {"TEST_POSTGRES_URL": "postgresql+psycopg://me:pw@127.0.0.1:1/none"}
    done = script("postgres.sh", "start", env=env)
    assert done.returncode == 1 and done.stdout == ""
    assert "does not answer" in done.stderr and "pw" not in done.stderr


@needs_postgres
@debian_root
def test_postgres_sh_start_is_idempotent_and_prints_the_url_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TEST_POSTGRES_URL"}
    first, second = script("postgres.sh", "start", env=env), script("postgres.sh", "start", env=env)
    url = script("postgres.sh", "url", env=env)
    assert first.returncode == second.returncode == url.returncode == 0, first.stderr
    assert first.stdout == second.stdout == url.stdout
    assert first.stdout.startswith("TEST_POSTGRES_URL=postgresql+psycopg://")
    assert first.stdout.count("\n") == 1
