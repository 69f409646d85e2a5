"""Every reader on tiny files written here, in every format, and on broken ones."""

import gzip
import io
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from training.datasets import DatasetError, read_cifar10, read_idx, read_mnist, split

RNG = np.random.default_rng(0)


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def mnist_arrays():
    return RNG.integers(0, 256, (6, 28, 28), dtype=np.uint8), np.array([5, 0, 4, 1, 9, 2])


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx(tmp_path, mnist_arrays, compress):
    images, labels = mnist_arrays
    for stem, array in [("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)]:
        data = idx_bytes(array)
        if compress:
            (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (tmp_path / stem).write_bytes(data)
    ds = read_mnist(tmp_path)
    assert ds.images.shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(ds.images[..., 0], images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.format == "idx"


def test_mnist_npz(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    np.savez(
        tmp_path / "mnist.npz", x_train=images, y_train=labels, x_test=images[:1], y_test=labels[:1]
    )
    for path in (tmp_path, tmp_path / "mnist.npz"):
        ds = read_mnist(path)
        np.testing.assert_array_equal(ds.images[..., 0], images)
        np.testing.assert_array_equal(ds.labels, labels)


def test_idx_truncated(tmp_path, mnist_arrays):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(mnist_arrays[0])[:-10])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: truncated"):
        read_idx(path)


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DatasetError, match="x.idx: not an IDX file"):
        read_idx(path)


def test_idx_bad_gzip(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz: not a readable gzip"):
        read_idx(path)


def test_mnist_missing_labels(tmp_path, mnist_arrays):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(mnist_arrays[0]))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.*not found"):
        read_mnist(tmp_path)


def test_mnist_count_mismatch(tmp_path, mnist_arrays):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(mnist_arrays[0]))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(mnist_arrays[1][:4]))
    with pytest.raises(DatasetError, match="6 images but 4 labels"):
        read_mnist(tmp_path)


def test_npz_missing_key(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match=r"mnist.npz: missing array\(s\) \['y_train'\]"):
        read_mnist(tmp_path / "mnist.npz")


def cifar_batch(n: int, offset: int) -> bytes:
    data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    return pickle.dumps({b"data": data, b"labels": [(offset + i) % 10 for i in range(n)]})


@pytest.fixture
def cifar_dir(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(cifar_batch(2, i))
    return root


def test_cifar_batches_dir(cifar_dir):
    ds = read_cifar10(cifar_dir.parent)
    assert ds.images.shape == (10, 32, 32, 3) and ds.format == "cifar-python-batches"
    raw = pickle.loads((cifar_dir / "data_batch_1").read_bytes())[b"data"][0]
    # channel-first rows of 1024 R, then G, then B -> HWC
    np.testing.assert_array_equal(ds.images[0, 0, 1], raw[[1, 1025, 2049]])
    assert ds.labels.tolist()[:2] == [1, 2]


def test_cifar_tar_gz(cifar_dir, tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_dir, arcname="cifar-10-batches-py")
    ds = read_cifar10(archive)
    assert ds.images.shape == (10, 32, 32, 3) and ds.format == "cifar-python-tar"


def test_cifar_missing_batch(cifar_dir):
    (cifar_dir / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3: file not found"):
        read_cifar10(cifar_dir)


def test_cifar_corrupt_batch(cifar_dir):
    (cifar_dir / "data_batch_2").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="data_batch_2: not a CIFAR-10 python batch"):
        read_cifar10(cifar_dir)


def png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, "PNG")
    return buf.getvalue()


def test_image_folder_dir_and_zip(tmp_path):
    root = tmp_path / "images"
    for cls, color in [("cat", (255, 0, 0)), ("airplane", (0, 255, 0))]:
        (root / cls).mkdir(parents=True)
        for i in range(2):
            (root / cls / f"{i}.png").write_bytes(png(color))
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in root.rglob("*.png"):
            zf.write(file, file.relative_to(root))
    for path, fmt in [(root, "image-folder"), (archive, "image-folder-zip")]:
        ds = read_cifar10(path)
        assert ds.format == fmt and ds.images.shape == (4, 32, 32, 3)
        assert ds.class_names == ["airplane", "cat"]  # not CIFAR's ten: alphabetical
        assert ds.images[ds.labels == 1][:, 0, 0].tolist() == [[255, 0, 0]] * 2


def test_image_folder_uses_cifar_order(tmp_path):
    from training.architectures import CIFAR10_CLASSES

    for cls in CIFAR10_CLASSES:
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "0.png").write_bytes(png((1, 2, 3)))
    ds = read_cifar10(tmp_path)
    assert ds.class_names == CIFAR10_CLASSES
    assert ds.labels.tolist() == list(range(10))


def test_image_folder_undecodable(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="cat/bad.jpg: not a decodable image"):
        read_cifar10(tmp_path)


def test_broken_zip(tmp_path):
    path = tmp_path / "train-images.zip"
    path.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DatasetError, match="train-images.zip: not a readable zip"):
        read_cifar10(path)


def test_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="nowhere: not found"):
        read_cifar10(tmp_path / "nowhere")


def test_split_is_disjoint_and_seeded():
    train, val = split(100, 0.1, seed=3)
    assert len(val) == 10 and len(train) == 90
    assert not set(train) & set(val)
    assert split(100, 0.1, seed=3)[1].tolist() == val.tolist()
    assert split(100, 0.1, seed=4)[1].tolist() != val.tolist()
