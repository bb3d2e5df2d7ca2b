"""The IDX file format of MNIST: read and write n-dimensional arrays, gzipped or not.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
uint32 sizes, then the values in row-major order, big-endian. MNIST uses type ``0x08``
(unsigned byte): images are ``0x00000803`` (n, 28, 28), labels ``0x00000801`` (n,).

:func:`decode_idx` and :func:`encode_idx` are pure; :func:`read_idx` and :func:`write_idx` add
the file and the gzip layer (a file is read as gzip when it starts with the gzip magic bytes,
and written as gzip when its name ends in ``.gz``).
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from liqi.errors import InvalidRequestError, NotFoundError

__all__ = ["decode_idx", "encode_idx", "read_idx", "write_idx"]

# IDX type code -> (name used in messages, big-endian numpy dtype).
_TYPES: dict[int, tuple[str, np.dtype[Any]]] = {
    0x08: ("unsigned byte", np.dtype(">u1")),
    0x09: ("signed byte", np.dtype(">i1")),
    0x0B: ("short", np.dtype(">i2")),
    0x0C: ("int", np.dtype(">i4")),
    0x0D: ("float", np.dtype(">f4")),
    0x0E: ("double", np.dtype(">f8")),
}
_CODE_BY_DTYPE: dict[np.dtype[Any], int] = {
    dtype.newbyteorder("="): code for code, (_, dtype) in _TYPES.items()
}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DIM = 2**32 - 1


def decode_idx(data: bytes, source: str = "<bytes>") -> npt.NDArray[Any]:
    """Decode the bytes of an (uncompressed) IDX file into a native-endian array.

    Args:
        data: the whole file.
        source: what ``data`` came from (a file name), used in error messages.

    Raises:
        InvalidRequestError: the magic number is not an IDX one, the file is shorter than its
            header says, or it has bytes after the data.
    """
    if len(data) < 4:
        raise InvalidRequestError(
            f"'{source}' is not an IDX file: it is {len(data)} bytes long, shorter than the "
            "4-byte magic number."
        )
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _TYPES:
        magic = int.from_bytes(data[:4], "big")
        known = ", ".join(f"0x{code:02x} ({name})" for code, (name, _) in _TYPES.items())
        raise InvalidRequestError(
            f"'{source}' is not an IDX file: magic number 0x{magic:08x} is not 0x0000TTNN with "
            f"TT one of {known}. MNIST images start with 0x00000803, labels with 0x00000801."
        )
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise InvalidRequestError(
            f"'{source}' is truncated: its magic number declares {ndim} dimensions "
            f"({4 * ndim} bytes of sizes) but only {len(data) - 4} bytes follow it."
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_end])
    name, dtype = _TYPES[type_code]
    needed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    present = len(data) - header_end
    if present < needed:
        raise InvalidRequestError(
            f"'{source}' is truncated: shape {shape} of {name} values needs {needed} data bytes "
            f"but the file has {present}. Copy or rebuild the file again."
        )
    if present > needed:
        raise InvalidRequestError(
            f"'{source}' is not a valid IDX file: it has {present - needed} bytes after the "
            f"{needed} data bytes its header (shape {shape} of {name} values) declares."
        )
    values = np.frombuffer(data, dtype=dtype, count=needed // dtype.itemsize, offset=header_end)
    return values.reshape(shape).astype(dtype.newbyteorder("="))


def encode_idx(array: npt.ArrayLike) -> bytes:
    """Encode an array as the bytes of an (uncompressed) IDX file.

    The array's dtype picks the IDX type: uint8, int8, int16, int32, float32 or float64.

    Raises:
        InvalidRequestError: the dtype has no IDX type, or a dimension is 2**32 or larger.
    """
    values = np.asarray(array)
    native = values.dtype.newbyteorder("=")
    if native not in _CODE_BY_DTYPE:
        supported = ", ".join(str(dtype) for dtype in _CODE_BY_DTYPE)
        raise InvalidRequestError(
            f"Cannot write an array of dtype {values.dtype} as IDX: use one of {supported} "
            "(for example array.astype(numpy.uint8) for images)."
        )
    if values.ndim > 255 or any(size > _MAX_DIM for size in values.shape):
        raise InvalidRequestError(
            f"Cannot write an array of shape {values.shape} as IDX: at most 255 dimensions, "
            f"each below 2**32."
        )
    code = _CODE_BY_DTYPE[native]
    header = struct.pack(f">HBB{values.ndim}I", 0, code, values.ndim, *values.shape)
    return header + values.astype(_TYPES[code][1], copy=False).tobytes(order="C")


def read_idx(path: str | os.PathLike[str]) -> npt.NDArray[Any]:
    """Read an IDX file, gzipped (detected by its first bytes) or not.

    Raises:
        NotFoundError: there is no such file.
        InvalidRequestError: the gzip stream or the IDX content is broken (see
            :func:`decode_idx`).
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise NotFoundError(f"IDX file '{file}' does not exist or is not a file.") from exc
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise InvalidRequestError(
                f"'{file}' is not a valid gzip file ({exc}); it is probably truncated. "
                "Copy or rebuild the file again."
            ) from exc
    return decode_idx(data, str(file))


def write_idx(path: str | os.PathLike[str], array: npt.ArrayLike) -> Path:
    """Write ``array`` as an IDX file, gzipped when the name ends in ``.gz``.

    The gzip stream has no file name and mtime 0, so the same array always gives the same
    bytes. The file is written to a temporary name and renamed, so a reader never sees half
    of it.

    Returns:
        The path written.
    """
    file = Path(path)
    data = encode_idx(array)
    if file.name.endswith(".gz"):
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as stream:
            stream.write(data)
        data = buffer.getvalue()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, file)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return file
