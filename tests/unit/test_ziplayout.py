from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from swell.ziplayout import Literal, Member, Slice, ZipLayout

MTIME = datetime(2020, 1, 25, 17, 0, 0)
UNZIP = "/usr/bin/unzip"
BSDTAR = shutil.which("bsdtar")
# bsdtar refuses UTF-8 names it cannot convert to the current locale.
TOOL_ENV = {**os.environ, "LC_ALL": "C.UTF-8"}

needs_unzip = pytest.mark.skipif(not os.path.exists(UNZIP), reason="Info-ZIP unzip not installed")
needs_bsdtar = pytest.mark.skipif(BSDTAR is None, reason="bsdtar (libarchive-tools) not installed")

_EOCD = struct.Struct("<IHHHHIIH")
_EOCD64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR = struct.Struct("<IIQI")
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")


def members_for(files: Sequence[tuple[str, bytes]]) -> list[Member]:
    return [Member(name, len(data), zlib.crc32(data)) for name, data in files]


def resolve(
    layout: ZipLayout, datas: Sequence[bytes], start: int = 0, end: int | None = None
) -> bytes:
    out = bytearray()
    for seg in layout.segments(start, end):
        if isinstance(seg, Literal):
            assert seg.data
            out += seg.data
        else:
            assert 0 <= seg.start < seg.end <= len(datas[seg.member])
            out += datas[seg.member][seg.start : seg.end]
    return bytes(out)


def build(
    files: Sequence[tuple[str, bytes]], *, mtime: datetime = MTIME, force_zip64: bool = False
) -> tuple[ZipLayout, bytes]:
    layout = ZipLayout(members_for(files), mtime=mtime, force_zip64=force_zip64)
    return layout, resolve(layout, [data for _, data in files])


def literal(layout: ZipLayout, start: int, end: int) -> bytes:
    """Archive bytes [start, end) that the layout produces itself (headers, directory)."""
    segs = list(layout.segments(start, end))
    assert all(isinstance(s, Literal) for s in segs), segs
    return b"".join(s.data for s in segs if isinstance(s, Literal))


def check_with_zipfile(blob: bytes, files: Sequence[tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == [name for name, _ in files]
        for name, data in files:
            info = zf.getinfo(name)
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.flag_bits & 0x08 == 0  # no data descriptor
            assert info.date_time == (2020, 1, 25, 17, 0, 0)
            assert zf.read(name) == data


def check_with_tools(blob: bytes, files: Sequence[tuple[str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.zip"
        path.write_bytes(blob)
        if os.path.exists(UNZIP):
            proc = subprocess.run(
                [UNZIP, "-t", str(path)], capture_output=True, env=TOOL_ENV, check=False
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
        if BSDTAR is not None:
            proc = subprocess.run(
                [BSDTAR, "-tf", str(path)], capture_output=True, env=TOOL_ENV, check=False
            )
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.decode().splitlines() == [name for name, _ in files]
            # From a pipe, libarchive reads forward through the local headers only.
            proc = subprocess.run(
                [BSDTAR, "-xOf", "-"], input=blob, capture_output=True, env=TOOL_ENV, check=False
            )
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout == b"".join(data for _, data in files)


segment_text = st.text(
    alphabet=st.sampled_from("abcxyz0189_-#.éßжλ日本"), min_size=1, max_size=12
).filter(lambda s: s not in {".", ".."})
names = st.lists(segment_text, min_size=1, max_size=3).map("/".join)
file_lists = st.lists(
    st.tuples(names, st.binary(max_size=3000)),
    min_size=1,
    max_size=20,
    unique_by=lambda f: f[0],
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=file_lists, force_zip64=st.booleans())
def test_archive_reads_back_with_zipfile_and_tools(
    files: list[tuple[str, bytes]], force_zip64: bool
) -> None:
    layout, blob = build(files, force_zip64=force_zip64)
    assert len(blob) == layout.size
    check_with_zipfile(blob, files)
    check_with_tools(blob, files)


@needs_unzip
def test_unzip_is_installed_for_the_property_test() -> None:
    """The property test checks Info-ZIP only where it exists; this makes a missing one visible."""


@needs_bsdtar
def test_bsdtar_is_installed_for_the_property_test() -> None:
    """As above, for libarchive's bsdtar."""


@given(files=file_lists, force_zip64=st.booleans(), data=st.data())
def test_any_range_of_segments_equals_the_same_slice_of_the_archive(
    files: list[tuple[str, bytes]], force_zip64: bool, data: st.DataObject
) -> None:
    layout, full = build(files, force_zip64=force_zip64)
    start = data.draw(st.integers(0, layout.size), label="start")
    end = data.draw(st.integers(start, layout.size), label="end")
    datas = [d for _, d in files]
    assert resolve(layout, datas, start, end) == full[start:end]
    assert resolve(layout, datas, start) == full[start:]


def test_empty_range_yields_nothing_and_bad_ranges_raise() -> None:
    layout, _ = build([("a.json.gz", b"abc")])
    assert list(layout.segments(5, 5)) == []
    assert list(layout.segments(layout.size, layout.size)) == []
    for start, end in [(-1, 3), (4, 3), (0, layout.size + 1)]:
        with pytest.raises(ValueError, match="outside archive"):
            layout.segments(start, end)


def test_member_data_is_one_slice_and_headers_are_literals() -> None:
    files = [("a.json.gz", b"x" * 100), ("b.json.gz", b""), ("c.json.gz", b"y" * 10)]
    layout, _ = build(files)
    segs = list(layout.segments())
    slices = [s for s in segs if isinstance(s, Slice)]
    assert slices == [Slice(0, 0, 100), Slice(2, 0, 10)]  # the empty member has no slice
    assert isinstance(segs[0], Literal)
    assert isinstance(segs[-1], Literal)
    header_a = 30 + len("a.json.gz")
    assert list(layout.segments(header_a + 10, header_a + 20)) == [Slice(0, 10, 20)]


def test_local_headers_carry_real_crc_and_sizes_without_extras() -> None:
    data = b"hello gzip part"
    layout, blob = build([("p/a.json.gz", data)])
    fields = _LOCAL.unpack_from(blob)
    sig, version, flags, method, _, _, crc, csize, usize, name_len, extra_len = fields
    assert sig == 0x04034B50
    assert (version, flags, method, extra_len) == (20, 0, 0, 0)
    assert (crc, csize, usize, name_len) == (zlib.crc32(data), len(data), len(data), 11)
    assert layout.size == 30 + 11 + len(data) + 46 + 11 + 22  # no ZIP64 end records


def test_fake_huge_member_gets_zip64_extras_and_correct_offsets() -> None:
    big, small, last = 5 * 2**30, 10, 3
    members = [
        Member("big.json.gz", big, 0x12345678),
        Member("small.json.gz", small, 0x0BADF00D),
        Member("last.json.gz", last, 0xCAFEBABE),
    ]
    layout = ZipLayout(members, mtime=MTIME)
    n0, n1, n2 = (len(m.name) for m in members)
    off1 = 30 + n0 + 20 + big  # big's local header has a 20-byte ZIP64 extra
    off2 = off1 + 30 + n1 + small
    cd_offset = off2 + 30 + n2 + last
    cd_size = (46 + n0 + 20) + (46 + n1 + 28) + (46 + n2 + 28)  # sizes / sizes + offsets
    assert layout.size == cd_offset + cd_size + 56 + 20 + 22

    # Local header of the big member: sizes in the ZIP64 extra only.
    head = literal(layout, 0, 30 + n0 + 20)
    _, version, flags, _, _, _, crc, csize, usize, name_len, extra_len = _LOCAL.unpack_from(head)
    assert (version, flags, crc, csize, usize) == (45, 0, 0x12345678, 0xFFFFFFFF, 0xFFFFFFFF)
    assert (name_len, extra_len) == (n0, 20)
    assert struct.unpack_from("<HHQQ", head, 30 + n0) == (1, 16, big, big)
    # The small member past 4 GiB needs no local extra; its sizes fit.
    head1 = literal(layout, off1, off1 + 30 + n1)
    _, version, _, _, _, _, crc, csize, usize, _, extra_len = _LOCAL.unpack_from(head1)
    assert (version, crc, csize, usize, extra_len) == (45, 0x0BADF00D, small, small, 0)
    # A range inside the big member is a single slice, found without reading anything.
    assert list(layout.segments(2**32, 2**32 + 7)) == [Slice(0, 2**32 - 50 - n0, 2**32 - 43 - n0)]

    # End records: EOCD64 and locator, EOCD with sentinels only where values overflow.
    tail = literal(layout, layout.size - 98, layout.size)
    sig, rec_size, _, needed, disk, cd_disk, here, total, size64, offset64 = _EOCD64.unpack_from(
        tail
    )
    assert (sig, rec_size, needed, disk, cd_disk) == (0x06064B50, 44, 45, 0, 0)
    assert (here, total, size64, offset64) == (3, 3, cd_size, cd_offset)
    assert _LOCATOR.unpack_from(tail, 56) == (0x07064B50, 0, cd_offset + cd_size, 1)
    assert _EOCD.unpack_from(tail, 76) == (0x06054B50, 0, 0, 3, 3, cd_size, 0xFFFFFFFF, 0)

    # Central directory entries: ZIP64 extra with both sizes, then the offset if it overflows.
    cd = literal(layout, cd_offset, cd_offset + cd_size)
    pos = 0
    expected = [
        (members[0], 0xFFFFFFFF, 0, [big, big]),
        (members[1], 0xFFFFFFFF, 0xFFFFFFFF, [small, small, off1]),
        (members[2], 0xFFFFFFFF, 0xFFFFFFFF, [last, last, off2]),
    ]
    for member, size32, offset_field, zip64_fields in expected:
        fields = _CENTRAL.unpack_from(cd, pos)
        assert fields[0] == 0x02014B50
        assert fields[2] == 45  # version needed
        assert fields[7:10] == (member.crc32, size32, size32)
        assert fields[-1] == offset_field
        name_len, extra_len = fields[10], fields[11]
        assert cd[pos + 46 : pos + 46 + name_len] == member.name.encode()
        extra = cd[pos + 46 + name_len : pos + 46 + name_len + extra_len]
        k = len(zip64_fields)
        assert struct.unpack(f"<HH{k}Q", extra) == (1, 8 * k, *zip64_fields)
        pos += 46 + name_len + extra_len
    assert pos == cd_size


def test_zip64_end_records_appear_at_65535_entries(tmp_path: Path) -> None:
    below = ZipLayout([Member(f"{i}", 0, 0) for i in range(0xFFFE)], mtime=MTIME)
    assert literal(below, below.size - 22, below.size)[:4] == b"PK\x05\x06"
    assert literal(below, below.size - 42, below.size - 38) != b"PK\x06\x07"

    files = [(f"{i}", b"") for i in range(0xFFFF)]
    _, blob = build(files)
    assert blob[-98:-94] == b"PK\x06\x06"
    assert blob[-42:-38] == b"PK\x06\x07"
    assert _EOCD.unpack_from(blob, len(blob) - 22)[3:5] == (0xFFFF, 0xFFFF)
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert len(zf.infolist()) == 0xFFFF
        assert zf.testzip() is None
    if os.path.exists(UNZIP):
        (tmp_path / "many.zip").write_bytes(blob)
        proc = subprocess.run(
            [UNZIP, "-tq", str(tmp_path / "many.zip")], capture_output=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_forced_zip64_writes_every_extra_and_the_end_records() -> None:
    files = [("a.json.gz", b"abc"), ("b.json.gz", b"")]
    _, blob = build(files, force_zip64=True)
    assert _LOCAL.unpack_from(blob)[1] == 45
    assert _LOCAL.unpack_from(blob)[-1] == 20
    cd_offset = struct.unpack_from("<Q", blob, len(blob) - 98 + 48)[0]
    entry = _CENTRAL.unpack_from(blob, cd_offset)
    assert entry[8:12] == (0xFFFFFFFF, 0xFFFFFFFF, len("a.json.gz"), 28)
    assert entry[-1] == 0xFFFFFFFF
    assert struct.unpack_from("<HH3Q", blob, cd_offset + 46 + 9) == (1, 24, 3, 3, 0)
    assert _EOCD.unpack_from(blob, len(blob) - 22)[3:7] == (0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    assert blob[-98:-94] == b"PK\x06\x06"
    check_with_zipfile(blob, files)
    check_with_tools(blob, files)


def test_empty_member_list_is_a_valid_empty_zip() -> None:
    for force in (False, True):
        layout, blob = build([], force_zip64=force)
        assert len(blob) == layout.size == (22 + 76 if force else 22)
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            assert zf.namelist() == []
    assert ZipLayout([], mtime=MTIME).etag() != ZipLayout([], mtime=MTIME, force_zip64=True).etag()


def test_non_ascii_names_round_trip_and_set_the_utf8_flag() -> None:
    files = [("187520/ascii_#1.json.gz", b"a"), ("187520/résumé_日本語_#2.json.gz", b"bb")]
    _, blob = build(files)
    check_with_zipfile(blob, files)
    check_with_tools(blob, files)
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert [info.flag_bits & 0x800 for info in zf.infolist()] == [0, 0x800]


def test_same_inputs_give_same_bytes_and_etag() -> None:
    files = [("187520/187520_2020-01-25_17#1.json.gz", os.urandom(500)), ("x", b"")]
    one, blob_one = build(files)
    two, blob_two = build(list(files))
    assert blob_one == blob_two
    assert one.etag() == two.etag()
    assert re.fullmatch(r'"[0-9a-f]{32}"', one.etag())


def test_etag_changes_with_anything_that_changes_the_bytes() -> None:
    members = [Member("a.json.gz", 10, 1), Member("b.json.gz", 20, 2)]
    base = ZipLayout(members, mtime=MTIME).etag()
    variants = [
        ZipLayout(members, mtime=MTIME + timedelta(minutes=1)),
        ZipLayout([Member("a.json.gz", 10, 3), members[1]], mtime=MTIME),
        ZipLayout([Member("c.json.gz", 10, 1), members[1]], mtime=MTIME),
        ZipLayout([Member("a.json.gz", 11, 1), members[1]], mtime=MTIME),
        ZipLayout(members[::-1], mtime=MTIME),
        ZipLayout(members, mtime=MTIME, force_zip64=True),
    ]
    etags = {v.etag() for v in variants}
    assert len(etags) == len(variants)
    assert base not in etags
    # DOS time has 2-second resolution: identical bytes, identical validator.
    assert ZipLayout(members, mtime=MTIME + timedelta(seconds=1)).etag() == base


def test_aware_mtime_is_taken_in_utc() -> None:
    members = [Member("a", 0, 0)]
    naive = ZipLayout(members, mtime=MTIME).etag()
    cet = timezone(timedelta(hours=1))
    assert ZipLayout(members, mtime=datetime(2020, 1, 25, 18, tzinfo=cet)).etag() == naive
    assert ZipLayout(members, mtime=MTIME.replace(tzinfo=UTC)).etag() == naive


@pytest.mark.parametrize(
    ("member", "mtime", "message"),
    [
        (Member("a", 0, 0), datetime(1979, 12, 31), "1980"),
        (Member("a" * 65536, 0, 0), MTIME, "65535"),
        (Member("\udcff", 0, 0), MTIME, "UTF-8"),
        (Member("a", -1, 0), MTIME, "size"),
        (Member("a", 0, 2**32), MTIME, "CRC32"),
    ],
)
def test_unrepresentable_inputs_raise_value_error(
    member: Member, mtime: datetime, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ZipLayout([member], mtime=mtime)


def test_range_at_the_end_does_not_rebuild_earlier_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    members = [Member(f"p/{i:06d}.json.gz", 1000, i) for i in range(100_000)]
    layout = ZipLayout(members, mtime=MTIME)
    built: list[int] = []
    local, central = ZipLayout._local_header, ZipLayout._central_entry

    def count_local(self: ZipLayout, i: int) -> bytes:
        built.append(i)
        return local(self, i)

    def count_central(self: ZipLayout, i: int) -> bytes:
        built.append(i)
        return central(self, i)

    monkeypatch.setattr(ZipLayout, "_local_header", count_local)
    monkeypatch.setattr(ZipLayout, "_central_entry", count_central)
    tail = list(layout.segments(layout.size - 100, layout.size))
    assert built == [99_999]  # only the last central directory entry
    assert sum(len(s.data) for s in tail if isinstance(s, Literal)) == 100
    built.clear()
    # 100,000 entries: the ZIP64 end records (76 bytes) precede the EOCD.
    last_data_end = layout.size - 98 - sum(46 + len(m.name) for m in members)
    assert list(layout.segments(last_data_end - 5, last_data_end)) == [Slice(99_999, 995, 1000)]
    assert built == []  # header lengths are known without building the headers
    list(layout.segments(0, 100))
    assert built == [0]


def write_sparse(path: Path, layout: ZipLayout, smalls: Sequence[bytes]) -> None:
    """Write the archive with member 0 as a hole (zeros); members 1.. come from `smalls`."""
    with path.open("wb") as f:
        for seg in layout.segments():
            if isinstance(seg, Literal):
                f.write(seg.data)
            elif seg.member == 0:
                f.seek(seg.end - seg.start, os.SEEK_CUR)
            else:
                f.write(smalls[seg.member - 1][seg.start : seg.end])
    assert path.stat().st_size == layout.size
    if path.stat().st_blocks * 512 > 2**30:
        pytest.skip("filesystem does not keep sparse files sparse")


SMALLS = [b"after the big one", b"and one more"]


@pytest.mark.parametrize("big", [0xFFFFFFFE, 0xFFFFFFFF, 2**32 + 5])
def test_real_readers_list_members_around_the_4_gib_boundary(tmp_path: Path, big: int) -> None:
    """Directory parsing only (the big member's CRC is fake): sizes and offsets past 4 GiB."""
    members = [Member("big.bin", big, 0)] + [
        Member(f"small{i}.bin", len(d), zlib.crc32(d)) for i, d in enumerate(SMALLS)
    ]
    layout = ZipLayout(members, mtime=MTIME)
    path = tmp_path / "big.zip"
    write_sparse(path, layout, SMALLS)
    with zipfile.ZipFile(path) as zf:
        assert [i.file_size for i in zf.infolist()] == [m.size for m in members]
        assert [zf.read(f"small{i}.bin") for i in range(len(SMALLS))] == SMALLS
    if os.path.exists(UNZIP):
        # unzip -l exits 1 on a misparsed ZIP64 extra ("extra field corrupt. Continuing...").
        proc = subprocess.run([UNZIP, "-l", str(path)], capture_output=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"{big}  " in proc.stdout.decode()
        # The members past 4 GiB, through their local headers (the big one is fake).
        smalls = [f"small{i}.bin" for i in range(len(SMALLS))]
        proc = subprocess.run([UNZIP, "-tq", str(path), *smalls], capture_output=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    if BSDTAR is not None:
        proc = subprocess.run([BSDTAR, "-tvf", str(path)], capture_output=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert [line.split()[4] for line in proc.stdout.decode().splitlines()] == [
            str(m.size) for m in members
        ]


@pytest.mark.slow
def test_real_readers_verify_a_member_of_exactly_0xffffffff_bytes(tmp_path: Path) -> None:
    """Full CRC check of a 4 GiB - 1 member of zeros (a sparse file) and the members after it.

    A size of exactly 0xFFFFFFFF is the one that tripped Info-ZIP's ZIP64 extra parsing.
    """
    big = 0xFFFFFFFF
    crc = 0  # zlib.crc32(bytes(0xFFFFFFFF)), computed once; unzip -t checks it below
    members = [Member("big.bin", big, crc)] + [
        Member(f"small{i}.bin", len(d), zlib.crc32(d)) for i, d in enumerate(SMALLS)
    ]
    layout = ZipLayout(members, mtime=MTIME)
    path = tmp_path / "big.zip"
    write_sparse(path, layout, SMALLS)
    if os.path.exists(UNZIP):
        proc = subprocess.run([UNZIP, "-tq", str(path)], capture_output=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None
