"""Unpacking the archives users hand to liqi (models over http(s), job scripts), safely.

One set of rules for zip and tar (plain, gzip, bzip2, xz; recognised by their content, not
their name): only files and folders inside the archive's own folder are unpacked. Absolute
paths, ``..``, symbolic and hard links, devices and FIFOs are refused, and so are archives
with more entries or more bytes than :class:`ArchiveLimits` allows. Every member is checked
before anything is written; while writing, bytes are counted, so a member that inflates past
the size it declares (a zip bomb) is stopped there.

The archive is unpacked into a hidden folder beside the destination and renamed into place
only once complete: on any error the destination does not appear and nothing is left behind.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import io
import lzma
import os
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from liqi.errors import ArchiveError

__all__ = ["DEFAULT_LIMITS", "FORMATS", "ArchiveLimits", "extract", "single_folder"]

FORMATS = ".zip, .tar, .tar.gz (.tgz), .tar.bz2 and .tar.xz"
CHUNK_BYTES = 1 << 20
# tarfile reads a pax or GNU long-name header whole: a compressed one of gigabytes (a few MB
# on the wire) would be gigabytes of memory. No real header comes near this.
MAX_READ_BYTES = 16 << 20

# What reading a broken archive raises, from the archive modules and the decompressors.
_READ_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,  # gzip.BadGzipFile, bz2's "Invalid data stream"
    EOFError,  # a truncated compressed stream
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,  # a zip compression method Python does not have
    RuntimeError,  # an encrypted zip member
)
# What writing a member raises when the archive's names, not the disk, are at fault.
_NAME_ERRNOS = {errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EILSEQ}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC, _BZIP2_MAGIC, _XZ_MAGIC = b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"
_TAR_SPECIAL_KINDS = {
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
}
_ZIP_SPECIAL_KINDS = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


@dataclass(frozen=True)
class ArchiveLimits:
    """How much one archive may unpack to.

    Attributes:
        max_total_bytes: the sum of its files' sizes, as declared and as actually written.
        max_entries: its files and folders, counted as the archive lists them.
    """

    max_total_bytes: int = 4 << 30
    max_entries: int = 50_000


DEFAULT_LIMITS = ArchiveLimits()


@dataclass(frozen=True)
class _Member:
    """One entry found safe to unpack: a folder, or a file of ``size`` bytes."""

    name: str  # as the archive spells it, for messages
    parts: tuple[str, ...]  # the relative path, normalised
    is_dir: bool
    size: int
    mode: int
    ref: tarfile.TarInfo | zipfile.ZipInfo


def extract(
    archive: Path, into: Path, *, what: str, limits: ArchiveLimits = DEFAULT_LIMITS
) -> None:
    """Unpack the zip or tar file ``archive`` into the new folder ``into``, all or nothing.

    Args:
        archive: the archive file; its format is read from its content.
        into: the folder to create; it must not exist, or be an empty folder (replaced).
        what: where the archive came from (a URL, an ``oss://`` or ``odps://`` URI), named in
            every message.
        limits: the caps on entries and bytes.

    Raises:
        ArchiveError: the file is not an archive liqi reads, is corrupt, or holds something
            it does not unpack; ``into`` was not created (or is still empty).
        FileExistsError: ``into`` is a file or a folder that is not empty.
    """
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        raise FileExistsError(f"Cannot unpack {what} into {into}: it exists and is not empty.")
    into.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{into.name}.tmp-", dir=into.parent))
    try:
        with contextlib.ExitStack() as stack:
            opened = _open(archive, what, limits, stack)
            if isinstance(opened, zipfile.ZipFile):
                zipped = opened
                members = _zip_members(zipped, what, limits)
                _write(members, tmp, what, lambda m: _zip_file(zipped, m))
            else:
                tar = opened
                members = _tar_members(tar, what, limits)
                _write(members, tmp, what, lambda m: _tar_file(tar, m))
        tmp.chmod(0o755)
        tmp.replace(into)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def single_folder(path: Path) -> Path:
    """An archive of one folder (``saved_model/...``) serves that folder; others, ``path``."""
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return path


def _open(
    archive: Path, what: str, limits: ArchiveLimits, stack: contextlib.ExitStack
) -> zipfile.ZipFile | tarfile.TarFile:
    """The archive opened (closed with ``stack``): a zip, or a tar read through its
    decompressor, one bounded read at a time."""
    with open(archive, "rb") as fh:
        head = fh.read(6)
    try:
        if head[:4] not in _ZIP_MAGIC:
            try:
                return stack.enter_context(_open_tar(archive, head, stack))
            except tarfile.ReadError:
                if not zipfile.is_zipfile(archive):  # a zip behind a prefix (self-extracting)?
                    raise
        listed = _zip_listed_entries(archive)
        if listed is not None and listed > limits.max_entries:
            _too_many(what, limits, f"its directory lists {listed:,}")
        return stack.enter_context(zipfile.ZipFile(archive))
    except _READ_ERRORS as exc:
        if not head:
            reason = "it is empty"
        elif isinstance(exc, tarfile.ReadError):
            reason = "it is neither a zip nor a tar file"
        else:
            reason = str(exc) or type(exc).__name__
        raise ArchiveError(
            f"The file {what} is not an archive liqi can unpack ({reason}). liqi unpacks "
            f"{FORMATS}, recognised from their content; pack it as one of those."
        ) from None


def _open_tar(archive: Path, head: bytes, stack: contextlib.ExitStack) -> tarfile.TarFile:
    """A tar read through the decompressor its first bytes name (its suffix may lie)."""
    stream = stack.enter_context(_decompressor(head)(archive))
    return tarfile.open(fileobj=_BoundedReads(stream), mode="r:")


def _decompressor(head: bytes) -> Callable[[Path], io.BufferedIOBase]:
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile
    if head.startswith(_BZIP2_MAGIC):
        return bz2.BZ2File
    if head.startswith(_XZ_MAGIC):
        return lzma.LZMAFile
    return lambda path: io.BufferedReader(io.FileIO(path))


class _ReadTooLargeError(tarfile.TarError):
    """tarfile asked for more bytes at once than any real tar header holds."""


class _BoundedReads:
    """A decompressed tar stream that refuses single reads past :data:`MAX_READ_BYTES`."""

    def __init__(self, stream: io.BufferedIOBase) -> None:
        self.stream = stream

    def read(self, size: int = -1, /) -> bytes:
        if size < 0 or size > MAX_READ_BYTES:
            raise _ReadTooLargeError(
                f"a tar header of {_bytes(size) if size >= 0 else 'unbounded size'} "
                f"(liqi reads at most {_bytes(MAX_READ_BYTES)} of one)"
            )
        return self.stream.read(size)

    def write(self, data: bytes, /) -> int:
        raise OSError(errno.EBADF, "archives are read-only here")

    def tell(self) -> int:
        return self.stream.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        return self.stream.seek(offset, whence)

    def close(self) -> None:
        self.stream.close()


def _zip_listed_entries(archive: Path) -> int | None:
    """How many entries a zip's end record says its directory holds, read before ZipFile
    parses the directory (a million entries would be a million objects in memory)."""
    with open(archive, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - (1 << 16) - 22))  # the end record and its longest comment
        tail = fh.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) < at + 22:
            return None
        (count,) = struct.unpack_from("<H", tail, at + 10)
        if count != 0xFFFF or at < 20 or tail[at - 20 : at - 16] != b"PK\x06\x07":
            return int(count)
        (zip64_end,) = struct.unpack_from("<Q", tail, at - 12)  # zip64: a 64-bit count
        fh.seek(zip64_end)
        record = fh.read(56)
        if len(record) < 56 or record[:4] != b"PK\x06\x06":
            return None
        return int(struct.unpack_from("<Q", record, 32)[0])


def _zip_members(zipped: zipfile.ZipFile, what: str, limits: ArchiveLimits) -> list[_Member]:
    infos = zipped.infolist()
    if len(infos) > limits.max_entries:
        _too_many(what, limits, f"the next one is {infos[limits.max_entries].filename!r}")
    members = []
    total = 0
    for info in infos:
        parts = _parts(info.filename, what)
        file_type = stat.S_IFMT(info.external_attr >> 16)
        if file_type == stat.S_IFLNK:
            _link(what, info.filename, "a symbolic link", None, "zip without --symlinks")
        if file_type in _ZIP_SPECIAL_KINDS:
            _special(what, info.filename, _ZIP_SPECIAL_KINDS[file_type])
        if info.flag_bits & 0x1:
            raise ArchiveError(
                f"The archive {what} holds {info.filename!r} encrypted; liqi cannot unpack "
                "encrypted archives. Pack it again without a password."
            )
        if parts is None:
            continue
        is_dir = info.is_dir() or file_type == stat.S_IFDIR
        if not is_dir:
            total = _add(total, info.file_size, what, info.filename, limits)
        mode = (info.external_attr >> 16) & 0o7777 or 0o644
        members.append(_Member(info.filename, parts, is_dir, info.file_size, mode, info))
    return members


def _tar_members(tar: tarfile.TarFile, what: str, limits: ArchiveLimits) -> list[_Member]:
    members = []
    total = 0
    count = 0
    last = None
    try:
        for info in tar:  # one at a time: an archive of a million entries stops at the cap
            count += 1
            last = info.name
            if count > limits.max_entries:
                _too_many(what, limits, f"the next one is {info.name!r}")
            parts = _parts(info.name, what)
            if info.issym():
                _link(what, info.name, "a symbolic link", info.linkname, "tar --dereference")
            if info.islnk():
                _link(what, info.name, "a hard link", info.linkname, "tar --hard-dereference")
            if not (info.isreg() or info.isdir()):
                kind = _TAR_SPECIAL_KINDS.get(info.type, f"an entry of type {info.type!r}")
                _special(what, info.name, kind)
            if parts is None:
                continue
            if info.isreg():
                total = _add(total, info.size, what, info.name, limits)
            members.append(_Member(info.name, parts, info.isdir(), info.size, info.mode, info))
    except _READ_ERRORS as exc:
        _corrupt(what, f"after {last!r}" if last else "at its start", exc)
    return members


def _zip_file(zipped: zipfile.ZipFile, member: _Member) -> IO[bytes]:
    assert isinstance(member.ref, zipfile.ZipInfo)
    return zipped.open(member.ref)


def _tar_file(tar: tarfile.TarFile, member: _Member) -> IO[bytes]:
    assert isinstance(member.ref, tarfile.TarInfo)
    source = tar.extractfile(member.ref)
    assert source is not None, member.name  # a regular file, checked above
    return source


def _write(
    members: Sequence[_Member], root: Path, what: str, open_member: Callable[[_Member], IO[bytes]]
) -> None:
    for member in members:
        target = root.joinpath(*member.parts)
        try:
            if member.is_dir:
                _mkdirs(root, member.parts)
                continue
            _mkdirs(root, member.parts[:-1])
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            with open(os.open(target, flags, 0o600), "wb") as out:
                _copy(open_member, member, out, what)
                os.fchmod(out.fileno(), _file_mode(member.mode))
        except OSError as exc:
            if exc.errno not in _NAME_ERRNOS:
                raise  # the disk, not the archive (full, read-only): not the user's input
            raise ArchiveError(
                f"The archive {what} holds {member.name!r}, which cannot be written: "
                f"{exc.strerror} (another entry has the same name as a file and as a folder, "
                "or the name is too long). Pack it again from a folder on disk."
            ) from None


def _copy(
    open_member: Callable[[_Member], IO[bytes]], member: _Member, out: IO[bytes], what: str
) -> None:
    """Copy ``member`` into ``out``, counting: one with more or fewer bytes than it declares
    is refused, and never more than one byte past its declared size is read. Errors of the
    archive become :class:`ArchiveError`; those of the disk (``out``) stay ``OSError``."""
    where = f"at {member.name!r}"
    written = 0
    try:
        source = open_member(member)
    except _READ_ERRORS as exc:
        _corrupt(what, where, exc)
    with source:
        while True:
            try:
                chunk = source.read(min(CHUNK_BYTES, member.size - written + 1))
            except _READ_ERRORS as exc:
                _corrupt(what, where, exc)
            if not chunk:
                break
            written += len(chunk)
            if written > member.size:
                raise ArchiveError(
                    f"The archive {what} is corrupt: {member.name!r} unpacks to more than "
                    f"the {member.size:,} bytes it declares (as a zip bomb does). Pack it "
                    "again with a standard tool."
                )
            out.write(chunk)
    if written < member.size:
        _corrupt(what, where, EOFError(f"only {written:,} of its {member.size:,} bytes"))


def _mkdirs(root: Path, parts: tuple[str, ...]) -> None:
    """Create the folders ``parts`` under ``root``, each 0o755 (narrowed by the umask)."""
    path = root
    for part in parts:
        path = path / part
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            if not path.is_dir() or path.is_symlink():
                raise


def _file_mode(mode: int) -> int:
    """The archive's mode without setuid/setgid/sticky or group/other write; owner rw; the
    exec bits only if the owner's is set."""
    mode = (mode & 0o755) | 0o600
    return mode if mode & 0o100 else mode & ~0o111


def _parts(name: str, what: str) -> tuple[str, ...] | None:
    """The path of member ``name`` inside the archive's folder; None for the folder itself."""
    if name.startswith("/"):
        raise ArchiveError(
            f"The archive {what} holds {name!r}, an absolute path; liqi unpacks only paths "
            "inside the archive's folder. Pack it again with relative paths "
            "(tar -C FOLDER -czf out.tar.gz .)."
        )
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts or "\x00" in name:
        raise ArchiveError(
            f"The archive {what} holds {name!r}, which would land outside its folder; "
            "refusing it. Pack it again with paths inside its folder (no '..')."
        )
    return parts or None


def _add(total: int, size: int, what: str, name: str, limits: ArchiveLimits) -> int:
    total += size
    if total > limits.max_total_bytes:
        raise ArchiveError(
            f"The archive {what} unpacks to more than {_bytes(limits.max_total_bytes)} "
            f"(the limit); {name!r} ({_bytes(size)}) takes it past. Make the archive smaller, "
            "or split it."
        )
    return total


def _too_many(what: str, limits: ArchiveLimits, detail: str) -> NoReturn:
    raise ArchiveError(
        f"The archive {what} holds more than {limits.max_entries:,} entries (the limit); "
        f"{detail}. Pack fewer files: leave out caches and virtualenvs, or pack many small "
        "files into one."
    )


def _link(what: str, name: str, kind: str, target: str | None, fix: str) -> NoReturn:
    to = f" (to {target!r})" if target is not None else ""
    raise ArchiveError(
        f"The archive {what} holds {name!r}, {kind}{to}; liqi does not unpack "
        f"links. Pack it again with the files themselves ({fix})."
    )


def _special(what: str, name: str, kind: str) -> NoReturn:
    raise ArchiveError(
        f"The archive {what} holds {name!r}, {kind}; liqi unpacks only files and folders. "
        "Pack it again without it."
    )


def _corrupt(what: str, where: str, exc: BaseException) -> NoReturn:
    reason = str(exc) or type(exc).__name__
    raise ArchiveError(
        f"The archive {what} is corrupt {where}: {reason}. Nothing was unpacked; "
        "upload it again, or pack it again with a standard tool."
    )


def _bytes(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"
