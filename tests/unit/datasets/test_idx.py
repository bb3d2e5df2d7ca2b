"""IDX files: round trips through write/read, gzip detection, and broken files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from liqi.datasets.idx import decode_idx, encode_idx, read_idx, write_idx
from liqi.datasets.mnist_reader import builtin_dir
from liqi.errors import InvalidRequestError, NotFoundError

SHIPPED = [
    "train/train-images-idx3-ubyte.gz",
    "train/train-labels-idx1-ubyte.gz",
    "test/t10k-images-idx3-ubyte.gz",
    "test/t10k-labels-idx1-ubyte.gz",
]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["values.idx", "values.idx.gz"])
def test_write_idx_round_trips_every_type(tmp_path: Path, dtype: type, name: str) -> None:
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)

    written = write_idx(tmp_path / name, array)
    back = read_idx(written)

    assert back.dtype == np.dtype(dtype)
    assert back.shape == (2, 3, 5)
    assert np.array_equal(back, array)
    assert written.read_bytes().startswith(b"\x1f\x8b") == name.endswith(".gz")
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_encode_idx_writes_big_endian_header_and_data() -> None:
    data = encode_idx(np.array([[1, 258]], dtype=np.int16))

    assert data == bytes.fromhex("00000b02000000010000000200010102")


def test_encode_idx_mnist_magic_numbers() -> None:
    images = encode_idx(np.zeros((3, 28, 28), dtype=np.uint8))
    labels = encode_idx(np.zeros(3, dtype=np.uint8))

    assert struct.unpack(">IIII", images[:16]) == (0x00000803, 3, 28, 28)
    assert len(images) == 16 + 3 * 28 * 28
    assert struct.unpack(">II", labels[:8]) == (0x00000801, 3)
    assert len(labels) == 8 + 3


def test_write_idx_is_deterministic(tmp_path: Path) -> None:
    array = np.arange(100, dtype=np.uint8).reshape(10, 10)

    first = write_idx(tmp_path / "a.gz", array).read_bytes()
    second = write_idx(tmp_path / "b.gz", array).read_bytes()

    assert first == second
    assert first[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0
    assert first[3] & 0x08 == 0  # no FNAME field


@pytest.mark.parametrize("relative", SHIPPED)
def test_shipped_files_reencode_to_the_same_idx_bytes(relative: str) -> None:
    path = builtin_dir() / relative

    array = read_idx(path)

    assert array.dtype == np.uint8
    assert encode_idx(array) == gzip.decompress(path.read_bytes())


def test_read_idx_raw_mnist_pixels_are_uint8_0_to_255() -> None:
    images = read_idx(builtin_dir() / "train" / "train-images-idx3-ubyte.gz")

    assert images.dtype == np.uint8
    assert images.shape == (4000, 28, 28)
    assert int(images.min()) == 0
    assert int(images.max()) == 255


def test_read_idx_truncated_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "images.idx"
    path.write_bytes(encode_idx(np.ones((4, 28, 28), dtype=np.uint8))[:-10])

    with pytest.raises(InvalidRequestError, match="is truncated") as caught:
        read_idx(path)

    assert str(path) in caught.value.message
    assert "3136 data bytes" in caught.value.message
    assert "3126" in caught.value.message


def test_read_idx_truncated_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "images.idx"
    path.write_bytes(bytes.fromhex("00000803000000040000"))

    with pytest.raises(InvalidRequestError, match="declares 3 dimensions"):
        read_idx(path)


def test_read_idx_truncated_gzip_is_refused(tmp_path: Path) -> None:
    good = write_idx(tmp_path / "images.idx.gz", np.ones((50, 28, 28), dtype=np.uint8))
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(good.read_bytes()[:-20])

    with pytest.raises(InvalidRequestError, match="not a valid gzip file") as caught:
        read_idx(path)

    assert str(path) in caught.value.message


def test_read_idx_bad_magic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not-idx.gz"
    path.write_bytes(gzip.compress(b"PK\x03\x04 a zip file, not IDX"))

    with pytest.raises(InvalidRequestError, match="0x504b0304") as caught:
        read_idx(path)

    assert str(path) in caught.value.message
    assert "0x00000803" in caught.value.message


def test_read_idx_unknown_type_code_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="magic number 0x00000a01"):
        decode_idx(bytes.fromhex("00000a0100000000"))


def test_read_idx_too_short_for_magic_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="2 bytes long"):
        decode_idx(b"\x00\x00", "tiny.idx")


def test_read_idx_trailing_bytes_are_refused() -> None:
    data = encode_idx(np.zeros(3, dtype=np.uint8)) + b"\x00"

    with pytest.raises(InvalidRequestError, match="1 bytes after the 3 data bytes"):
        decode_idx(data, "labels.idx")


def test_read_idx_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        read_idx(tmp_path / "absent.idx.gz")


def test_encode_idx_unsupported_dtype_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="dtype uint16"):
        encode_idx(np.zeros(2, dtype=np.uint16))
