"""What a crash leaves behind is cleaned when a store opens: interrupted writes (``*.tmp``,
``blobs/.staging``) and the empty directories of deleted DSAR outputs."""

from __future__ import annotations

from pathlib import Path

from swell.settings import Settings
from swell.store import Store


async def test_leftovers_of_a_crash_are_removed_at_start_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "blobs" / ".staging").mkdir(parents=True)
    (data / "demo.json.tmp").write_text("{")  # a marker write cut short
    (data / "blobs" / ".staging" / "1_2024#0.json.gz.123").write_bytes(b"half")
    (data / "blobs" / "dsar" / "17").mkdir(parents=True)  # outputs deleted, directory not
    (data / "blobs" / "dsar" / "18").mkdir()
    (data / "blobs" / "dsar" / "18" / "0.json.gz").write_bytes(b"kept")
    (data / "blobs" / "3").mkdir()
    (data / "blobs" / "3" / "3_2024-01-01_0#0.json.gz").write_bytes(b"a part")
    store = await Store.open(Settings(data_dir=data, seal_check_seconds=3600))
    try:
        assert not (data / "demo.json.tmp").exists()
        assert list((data / "blobs" / ".staging").iterdir()) == []
        assert not (data / "blobs" / "dsar" / "17").exists()
        assert (data / "blobs" / "dsar" / "18" / "0.json.gz").read_bytes() == b"kept"
        assert (data / "blobs" / "3" / "3_2024-01-01_0#0.json.gz").exists()
    finally:
        await store.aclose()


async def test_a_demo_marker_is_written_whole(tmp_path: Path) -> None:
    store = await Store.open(Settings(data_dir=tmp_path, seal_check_seconds=3600))
    try:
        data_dir = store.backends.data_dir
        assert data_dir.marker("demo") is None
        data_dir.set_marker("demo", {"org_id": 1, "project_id": 2})
        assert data_dir.marker("demo") == {"org_id": 1, "project_id": 2}
        assert sorted(p.name for p in tmp_path.glob("demo*")) == ["demo.json"]
    finally:
        await store.aclose()
