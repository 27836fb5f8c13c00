"""The data directory is private to its owner: 0700 directories, 0600 files, from every command."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import LiveServer, hours_around_now, run_cli


def modes(root: Path) -> dict[str, int]:
    """The permission bits of everything under ``root`` (and of root itself, as ".")."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_every_file_a_server_writes_is_owner_only(
    live_server: LiveServer, live_keys: tuple[Path, dict[str, Any], dict[str, Any]]
) -> None:
    data_dir, _, project = live_keys
    events = [{"user_id": "mode-user", "event_type": "e", "insert_id": f"m-{i}"} for i in range(3)]
    resp = httpx.post(
        f"{live_server.url}/2/httpapi",
        json={"api_key": project["api_key"], "events": events},
        timeout=30,
    )
    assert resp.status_code == 200
    resp = httpx.get(
        f"{live_server.url}/api/2/export",
        params=hours_around_now(),
        auth=(project["api_key"], project["secret_key"]),
        timeout=30,
    )
    assert resp.status_code == 200  # a part was sealed into blobs/
    found = modes(data_dir)
    assert any(name.endswith(".json.gz") for name in found), found
    assert any(name.startswith("wal/") for name in found), found
    loose = {
        name: oct(mode)
        for name, mode in found.items()
        if mode & 0o077 or mode != (0o700 if (data_dir / name).is_dir() else 0o600)
    }
    assert loose == {}


def test_a_command_tightens_what_was_left_readable_and_says_so(tmp_path: Path) -> None:
    data_dir = tmp_path / "loose"
    run_cli("org", "create", "acme", data_dir=data_dir)
    os.chmod(data_dir, 0o755)  # noqa: S103 (what an older swell left)
    os.chmod(data_dir / "meta.db", 0o644)
    (data_dir / "blobs").mkdir(mode=0o755, exist_ok=True)
    os.chmod(data_dir / "blobs", 0o755)  # noqa: S103
    out = subprocess.run(
        [sys.executable, "-m", "swell", "org", "create", "two", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "meta.db was readable by other users" in out.stderr
    found = modes(data_dir)
    assert found["."] == 0o700
    assert found["meta.db"] == 0o600
    assert found["blobs"] == 0o700
