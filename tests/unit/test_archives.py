"""liqi.archives: zip and tar archives unpacked all or nothing, refusing what could escape or
explode; built here as real files, good ones and hand-crafted malicious ones."""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from liqi.archives import ArchiveLimits, extract, single_folder
from liqi.errors import ArchiveError, InvalidRequestError

pytestmark = pytest.mark.timeout(60)

WHAT = "oss://models/mnist.tar.gz"
MiB = 1 << 20

# name -> (bytes, mode) of a good archive; None for a folder.
GOOD: dict[str, tuple[bytes, int] | None] = {
    "saved_model/saved_model.pb": (b"\x08\x01graph", 0o644),
    "saved_model/variables/variables.data-00000-of-00001": (os.urandom(300_000), 0o644),
    "saved_model/assets": None,
    "run.sh": (b"#!/bin/sh\necho hi\n", 0o4777),  # setuid and world-writable: both dropped
    "notes.txt": (b"", 0o666),
}
EXPECTED_MODES = {
    "saved_model/saved_model.pb": 0o644,
    "saved_model/variables/variables.data-00000-of-00001": 0o644,
    "run.sh": 0o755,
    "notes.txt": 0o644,
}


def tar_entry(name: str, data: bytes = b"", *, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def write_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for info, data in entries:
            zipped.writestr(info, data)
    return path


def zip_entry(
    name: str, data: bytes = b"", *, mode: int = stat.S_IFREG | 0o644
) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, data


def good_tar_entries() -> list[tuple[tarfile.TarInfo, bytes]]:
    entries = []
    for name, spec in GOOD.items():
        if spec is None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o777
            entries.append((info, b""))
        else:
            entries.append(tar_entry(name, spec[0], mode=spec[1]))
    return entries


def good_zip_entries() -> list[tuple[zipfile.ZipInfo, bytes]]:
    return [
        zip_entry(name + "/", mode=stat.S_IFDIR | 0o777)
        if spec is None
        else zip_entry(name, spec[0], mode=stat.S_IFREG | spec[1])
        for name, spec in GOOD.items()
    ]


def tree(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty folder the archives are unpacked under (as ``out/unpacked``)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def refused(archive: Path, out: Path, limits: ArchiveLimits | None = None) -> str:
    """Extract ``archive``, expecting a refusal that leaves ``out`` empty; its message."""
    with pytest.raises(ArchiveError) as caught:
        extract(archive, out / "unpacked", what=WHAT, limits=limits or ArchiveLimits())
    assert list(out.iterdir()) == []  # neither the target nor a temporary folder
    assert WHAT in caught.value.message
    return caught.value.message


# Good archives --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_a_tar_unpacks_to_exactly_its_files_recognised_by_content(
    tmp_path: Path, out: Path, mode: str
) -> None:
    archive = write_tar(tmp_path / "model.bin", good_tar_entries(), mode)  # no telling suffix

    extract(archive, out / "unpacked", what=WHAT)

    assert tree(out / "unpacked") == expected_tree()
    assert_modes(out / "unpacked")
    assert [p.name for p in out.iterdir()] == ["unpacked"]


def test_a_zip_unpacks_to_exactly_its_files(tmp_path: Path, out: Path) -> None:
    archive = write_zip(tmp_path / "model.tar.gz", good_zip_entries())  # a misleading suffix

    extract(archive, out / "unpacked", what=WHAT)

    assert tree(out / "unpacked") == expected_tree()
    assert_modes(out / "unpacked")


def test_a_zip_without_unix_modes_unpacks_files_0o644(tmp_path: Path, out: Path) -> None:
    archive = tmp_path / "windows.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        info = zipfile.ZipInfo("dir/readme.txt")
        info.create_system, info.external_attr = 0, 0x20  # MS-DOS: the "archive" attribute
        zipped.writestr(info, b"from windows")

    extract(archive, out / "unpacked", what=WHAT)

    assert tree(out / "unpacked") == {"dir": None, "dir/readme.txt": b"from windows"}
    assert stat.S_IMODE((out / "unpacked" / "dir" / "readme.txt").stat().st_mode) == 0o644


def test_dot_entries_and_an_empty_target_folder_are_fine(tmp_path: Path, out: Path) -> None:
    dot = tarfile.TarInfo(".")
    dot.type = tarfile.DIRTYPE
    archive = write_tar(tmp_path / "a.tgz", [(dot, b""), tar_entry("./entry.py", b"print(1)\n")])
    (out / "unpacked").mkdir()  # as a job's work/ folder is, before its script is staged

    extract(archive, out / "unpacked", what=WHAT)

    assert tree(out / "unpacked") == {"entry.py": b"print(1)\n"}


def test_a_target_that_holds_files_is_not_touched(tmp_path: Path, out: Path) -> None:
    archive = write_tar(tmp_path / "a.tgz", [tar_entry("new.txt", b"new")])
    (out / "unpacked").mkdir()
    (out / "unpacked" / "old.txt").write_bytes(b"old")

    with pytest.raises(FileExistsError):
        extract(archive, out / "unpacked", what=WHAT)

    assert tree(out) == {"unpacked": None, "unpacked/old.txt": b"old"}


def test_an_archive_of_one_folder_serves_that_folder(tmp_path: Path, out: Path) -> None:
    archive = write_tar(tmp_path / "a.tgz", good_tar_entries()[:3])
    extract(archive, out / "one", what=WHAT)
    mixed = write_tar(tmp_path / "b.tgz", good_tar_entries())
    extract(mixed, out / "many", what=WHAT)

    assert single_folder(out / "one") == out / "one" / "saved_model"
    assert single_folder(out / "many") == out / "many"


# Refused archives -----------------------------------------------------------------------------


def link(name: str, kind: bytes, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info, b""


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (tar_entry("../evil", b"x"), ["'../evil'", "outside its folder"]),
        (tar_entry("model/../../evil", b"x"), ["'model/../../evil'", "outside its folder"]),
        (tar_entry("/etc/x", b"x"), ["'/etc/x'", "absolute path"]),
        (
            link("passwd", tarfile.SYMTYPE, "/etc/passwd"),
            ["'passwd'", "symbolic link", "/etc/passwd"],
        ),
        (link("hard", tarfile.LNKTYPE, "ok.txt"), ["'hard'", "hard link", "--hard-dereference"]),
        (special("dev/null0", tarfile.CHRTYPE), ["'dev/null0'", "character device"]),
        (special("disk", tarfile.BLKTYPE), ["'disk'", "block device"]),
        (special("pipe", tarfile.FIFOTYPE), ["'pipe'", "FIFO"]),
    ],
    ids=[
        "dotdot",
        "dotdot-inside",
        "absolute",
        "symlink",
        "hardlink",
        "chardev",
        "blockdev",
        "fifo",
    ],
)
def test_a_tar_with_an_unsafe_member_is_refused_whole(
    tmp_path: Path, out: Path, bad: tuple[tarfile.TarInfo, bytes], words: list[str]
) -> None:
    archive = write_tar(tmp_path / "evil.tar.gz", [tar_entry("ok.txt", b"fine"), bad])

    message = refused(archive, out)

    for word in words:
        assert word in message
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (zip_entry("../evil", b"x"), ["'../evil'", "outside its folder"]),
        (zip_entry("/etc/x", b"x"), ["'/etc/x'", "absolute path"]),
        (
            zip_entry("passwd", b"/etc/passwd", mode=stat.S_IFLNK | 0o777),
            ["'passwd'", "symbolic link"],
        ),
        (zip_entry("tty", mode=stat.S_IFCHR | 0o666), ["'tty'", "character device"]),
        (zip_entry("pipe", mode=stat.S_IFIFO | 0o666), ["'pipe'", "FIFO"]),
    ],
    ids=["dotdot", "absolute", "symlink", "chardev", "fifo"],
)
def test_a_zip_with_an_unsafe_member_is_refused_whole(
    tmp_path: Path, out: Path, bad: tuple[zipfile.ZipInfo, bytes], words: list[str]
) -> None:
    archive = write_zip(tmp_path / "evil.zip", [zip_entry("ok.txt", b"fine"), bad])

    message = refused(archive, out)

    for word in words:
        assert word in message


def test_a_tar_of_100_000_entries_is_refused_at_the_cap(tmp_path: Path, out: Path) -> None:
    # 100,000 empty files: one ustar header each, only the name and checksum differing
    # (tarfile would take seconds to write them one by one).
    template = tarfile.TarInfo("f000000").tobuf(tarfile.USTAR_FORMAT)
    unsummed = sum(template[:148] + b" " * 8 + template[156:]) - sum(b"f000000")
    headers = [
        name + template[7:148] + b"%06o\0 " % (unsummed + sum(name)) + template[156:]
        for name in (b"f%06d" % i for i in range(100_000))
    ]
    archive = tmp_path / "many.tar"
    archive.write_bytes(b"".join(headers) + bytes(1024))
    with tarfile.open(archive) as tar:  # a valid tar of 100,000 entries
        first = tar.next()
        assert first is not None
        assert first.name == "f000000"
    assert archive.stat().st_size == 100_000 * 512 + 1024

    message = refused(archive, out)

    assert "more than 50,000 entries" in message
    assert "'f050000'" in message  # the first one past the cap


def test_a_zip_listing_more_entries_than_the_cap_is_refused(tmp_path: Path, out: Path) -> None:
    archive = write_zip(tmp_path / "many.zip", [zip_entry(f"f{i}") for i in range(11)])

    message = refused(archive, out, ArchiveLimits(max_entries=10))

    assert "more than 10 entries" in message
    assert "lists 11" in message


def test_members_adding_up_past_the_byte_cap_are_refused(tmp_path: Path, out: Path) -> None:
    half = bytes(600 * 1024)
    archive = write_tar(tmp_path / "big.tgz", [tar_entry("a.bin", half), tar_entry("b.bin", half)])

    message = refused(archive, out, ArchiveLimits(max_total_bytes=MiB))

    assert "more than 1 MiB" in message
    assert "'b.bin'" in message


def test_a_zip_member_inflating_past_the_cap_is_refused(tmp_path: Path, out: Path) -> None:
    archive = write_zip(tmp_path / "bomb.zip", [zip_entry("zeros.bin", bytes(2 * MiB))])
    assert archive.stat().st_size < 10_000  # deflate makes 2 MiB of zeros tiny

    message = refused(archive, out, ArchiveLimits(max_total_bytes=MiB))

    assert "'zeros.bin'" in message
    assert "more than 1 MiB" in message


def test_a_zip_member_that_lies_about_its_size_is_refused(tmp_path: Path, out: Path) -> None:
    archive = write_zip(tmp_path / "liar.zip", [zip_entry("zeros.bin", bytes(2 * MiB))])
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local, central
        at = data.index(signature)
        struct.pack_into("<I", data, at + offset, 1000)  # declares 1000 bytes
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as liar:
        assert liar.getinfo("zeros.bin").file_size == 1000

    message = refused(archive, out, ArchiveLimits(max_total_bytes=MiB))

    assert "'zeros.bin'" in message
    assert "corrupt" in message


def test_a_huge_pax_header_is_refused_before_it_is_read_into_memory(
    tmp_path: Path, out: Path
) -> None:
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 32 * MiB  # tarfile would read it whole
    ok, _ = tar_entry("ok.txt", b"fine")
    raw = ok.tobuf(tarfile.USTAR_FORMAT) + b"fine".ljust(512, b"\0")
    raw += pax.tobuf(tarfile.USTAR_FORMAT) + bytes(32 * MiB) + bytes(1024)
    archive = tmp_path / "pax.tar.gz"
    archive.write_bytes(gzip.compress(raw, compresslevel=1))

    message = refused(archive, out)

    assert "after 'ok.txt'" in message
    assert "tar header of 32 MiB" in message


def test_a_file_and_a_folder_of_the_same_name_are_refused(tmp_path: Path, out: Path) -> None:
    archive = write_tar(tmp_path / "clash.tgz", [tar_entry("a", b"file"), tar_entry("a/b", b"x")])

    message = refused(archive, out)

    assert "'a/b'" in message


# Not archives ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"#!/usr/bin/env python\nprint('not an archive')\n" * 20, ["neither a zip nor a tar"]),
        (b"", ["empty"]),
    ],
    ids=["text", "empty"],
)
def test_a_file_that_is_no_archive_is_refused_naming_the_formats(
    tmp_path: Path, out: Path, content: bytes, words: list[str]
) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(content)

    message = refused(archive, out)

    for word in [*words, ".zip", ".tar.gz", ".tar.bz2", ".tar.xz"]:
        assert word in message


@pytest.mark.parametrize("suffix", ["tar.gz", "tar.xz", "zip"])
def test_a_truncated_archive_is_refused(tmp_path: Path, out: Path, suffix: str) -> None:
    payload = os.urandom(200_000)  # incompressible: cutting the file cuts the member
    if suffix == "zip":
        archive = write_zip(tmp_path / "cut.zip", [zip_entry("model.pb", payload)])
    else:
        mode = "w:gz" if suffix == "tar.gz" else "w:xz"
        archive = write_tar(tmp_path / f"cut.{suffix}", [tar_entry("model.pb", payload)], mode)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2] if suffix != "zip" else data[:1000] + data[-200:])

    message = refused(archive, out)

    assert "corrupt" in message or "not an archive" in message


def test_archive_errors_are_bad_requests() -> None:
    assert issubclass(ArchiveError, InvalidRequestError)
    assert (ArchiveError.code, ArchiveError.http_status, ArchiveError.exit_code) == (
        "archive_invalid",
        400,
        2,
    )


def expected_tree() -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {"saved_model": None, "saved_model/variables": None}
    for name, spec in GOOD.items():
        found[name] = None if spec is None else spec[0]
    return dict(sorted(found.items()))


def assert_modes(root: Path) -> None:
    for name, mode in EXPECTED_MODES.items():
        assert stat.S_IMODE((root / name).stat().st_mode) == mode, name
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) & ~0o755 == 0, folder
