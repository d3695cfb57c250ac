"""Datasets known by name, read through tensorflow-datasets (TFDS), and the offline Fashion-MNIST.

Known names and their TFDS builders: see KNOWN_DATASETS. TFDS downloads a dataset once (when the
machine is online) and keeps it prepared under its data dir: the `data_dir` argument, else
$TFDS_DATA_DIR, else ~/tensorflow_datasets.

Offline Fashion-MNIST: Debian's `dataset-fashion-mnist` package ships the four upstream IDX .gz
files in /usr/share/datasets/fashion-mnist/, but repacked with a bare gzip header (no file name,
no mtime), so TFDS rejects them by checksum. The compressed data are byte-identical, so writing the
upstream header back (`restore_gzip_header`) gives the exact upstream files. They are written to
a manual dir in the m3d_tf cache (never into /usr/share), checked against the sha256 sums TFDS
registers for fashion_mnist, and TFDS prepares the dataset from there: its download manager takes
`<manual_dir>/<file name of the registered URL>` instead of downloading, after checking size and
sha256 (tensorflow_datasets/core/download/download_manager.py, `_get_manually_downloaded_path`).
If any step of the TFDS route fails, the same IDX files are read directly and a warning says why;
DatasetInfo.source then starts with "idx:" instead of "tfds:".
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import pathlib
import socket
import struct
import urllib.parse
import warnings

from m3d_tf.data.arrays import Reader, as_labels, as_uint8_images
from m3d_tf.data.idx import open_idx_dir
from m3d_tf.data.records import CHUNK_SIZE

# Our name -> TFDS builder name.
KNOWN_DATASETS = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "fashion_mnist": "fashion_mnist",
    "mnist": "mnist",
    "svhn": "svhn_cropped",
}
# Whether a horizontal flip keeps an image's class, by TFDS builder name (DatasetInfo.flip): a
# mirrored coat, cat or truck is one still; a mirrored digit is no digit.
MIRRORING = {
    "cifar10": True,
    "cifar100": True,
    "fashion_mnist": True,
    "mnist": False,
    "svhn_cropped": False,
}
DEBIAN_FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# gzip MTIME of the upstream files (zalandoresearch/fashion-mnist, 2017-08-31), by file prefix.
FASHION_MNIST_MTIMES = {"train": 1504176606, "t10k": 1504176627}
_FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_PROXY_VARIABLES = (
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
)


def restore_gzip_header(data, *, filename, mtime):
    """Gives a gzip stream with a bare header (RFC 1952: no flags) a file name and an mtime.

    Only the header changes: FLG becomes 0x08 (FNAME), MTIME the given time, and the
    zero-terminated Latin-1 name follows the 10 fixed bytes; XFL, OS and the deflate data are kept.

    Args:
        data: bytes of a gzip file whose FLG byte is 0.
        filename: the original file name, without ".gz" (as gzip stores it).
        mtime: int, seconds since 1970-01-01 UTC.

    Returns:
        bytes, len(data) + len(filename) + 1 long.

    Raises:
        ValueError: not a deflate gzip stream, or its header already carries flags.

    Example:
        >>> restore_gzip_header(packaged, filename="t10k-labels-idx1-ubyte", mtime=1504176627)
        b'\\x1f\\x8b\\x08\\x08\\xf3\\xe9\\xa7Y\\x00\\x03t10k-labels-idx1-ubyte\\x00...'
    """
    if len(data) < 18 or data[:3] != b"\x1f\x8b\x08":
        raise ValueError(
            f"not a gzip (deflate) stream: it starts with bytes [{data[:3].hex(' ')}], "
            "expected [1f 8b 08]; give the packaged .gz file."
        )
    if data[3] != 0:
        raise ValueError(
            f"the gzip header already has flags {data[3]:#04x}; restore_gzip_header only adds "
            "a name to a bare header (flags 0x00)."
        )
    return (
        data[:3]
        + bytes([0x08])
        + struct.pack("<I", mtime)
        + data[8:10]
        + filename.encode("latin-1")
        + b"\0"
        + data[10:]
    )


def mirroring(name):
    """DatasetInfo.flip of a catalogued dataset (our name or its TFDS name); None if unknown."""
    return MIRRORING.get(KNOWN_DATASETS.get(name, name))


def mirroring_by_name(name):
    """How sets saved before DatasetInfo.flip existed were mirrored: by the dataset's name alone
    (flips unless it names digits). Only for reading such old sets; new sets record the choice."""
    known = mirroring(name)
    return True if known is None else known


def default_cache_dir():
    """$M3D_TF_CACHE_DIR, else $XDG_CACHE_HOME/m3d_tf, else ~/.cache/m3d_tf (pathlib.Path)."""
    if os.environ.get("M3D_TF_CACHE_DIR"):
        return pathlib.Path(os.environ["M3D_TF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "m3d_tf"


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def prepare_fashion_mnist_manual_dir(packaged_dir, manual_dir, url_infos):
    """Writes the upstream Fashion-MNIST .gz files into `manual_dir`, checked by sha256.

    Files already there with the right checksum are kept, so a second call only reads them.

    Args:
        packaged_dir: pathlib.Path with Debian's four .gz files (read only).
        manual_dir: pathlib.Path to write to (created).
        url_infos: TFDS's registered {url: UrlInfo(size, checksum, filename)} for fashion_mnist.

    Returns:
        manual_dir.

    Raises:
        FileNotFoundError: a packaged file is missing.
        ValueError: a restored file does not match TFDS's sha256.
    """
    manual_dir.mkdir(parents=True, exist_ok=True)
    for info in url_infos.values():
        target = manual_dir / info.filename
        if target.is_file() and _sha256(target.read_bytes()) == info.checksum:
            continue
        packaged = packaged_dir / info.filename
        if not packaged.is_file():
            raise FileNotFoundError(
                f"{packaged} does not exist; install it with "
                "`apt-get install dataset-fashion-mnist`."
            )
        stem = info.filename.removesuffix(".gz")
        restored = restore_gzip_header(
            packaged.read_bytes(), filename=stem, mtime=FASHION_MNIST_MTIMES[stem.split("-")[0]]
        )
        if _sha256(restored) != info.checksum:
            raise ValueError(
                f"{packaged} with its gzip header restored has sha256 {_sha256(restored)}, not "
                f"the upstream {info.checksum} that TFDS expects; the packaged data differ."
            )
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        partial.write_bytes(restored)
        os.replace(partial, target)
    return manual_dir


def _check_reachable(urls):
    """Fails fast when the download hosts do not resolve (TFDS would retry for minutes)."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return  # behind a proxy, the hosts need not resolve here
    for host in sorted({urllib.parse.urlparse(url).hostname for url in urls}):
        try:
            socket.getaddrinfo(host, 443)
        except OSError as error:
            raise ConnectionError(
                f"cannot resolve {host} ({error}); the machine looks offline"
            ) from None


def _tfds_reader(name, builder):
    import tensorflow_datasets as tfds

    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"TFDS dataset {builder.name} has features {sorted(features)}, not 'image' and "
            "'label'; only image classification datasets can be loaded."
        )

    def read(split):
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        where = f"TFDS {builder.name} split {split!r}"
        images = as_uint8_images(data["image"], where)
        return images, as_labels(data["label"], images.shape[0], where)

    def chunks(split):
        where = f"TFDS {builder.name} split {split!r}"
        for data in tfds.as_numpy(builder.as_dataset(split=split, batch_size=CHUNK_SIZE)):
            images = as_uint8_images(data["image"], where)
            yield images, as_labels(data["label"], images.shape[0], where)

    return Reader(
        name=name,
        source=f"tfds:{builder.data_dir}",
        split_sizes={split: info.num_examples for split, info in builder.info.splits.items()},
        class_names=tuple(features["label"].names),
        read=read,
        chunks=chunks,
        flip=mirroring(builder.name),
    )


class _NotInTFDS(ValueError):
    """TFDS has no builder of that name: a mistake to report, not a failure to fall back from."""


def _open_prepared(name, tfds_name, *, data_dir, manual_dir_from, cache_dir, download):
    """Prepares (if needed) and opens a TFDS dataset; raises whatever TFDS raises."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise _NotInTFDS(
            f"TFDS has no dataset {tfds_name!r}; pick an image classification dataset from "
            "https://www.tensorflow.org/datasets/catalog/overview or a known name "
            f"({', '.join(sorted(KNOWN_DATASETS))})."
        ) from None
    if builder.is_prepared():
        return _tfds_reader(name, builder)
    if manual_dir_from is None and not download:
        raise FileNotFoundError(
            f"{tfds_name} is not prepared in {builder.data_dir} and download=False"
        )
    with _preparing(builder.data_dir):
        # Another process (a second job, a pipeline's other component) may have prepared it while
        # this one waited: a fresh builder reads what is on disk now.
        builder = tfds.builder(tfds_name, data_dir=data_dir)
        if not builder.is_prepared():
            _prepare(builder, tfds_name, manual_dir_from, cache_dir)
    return _tfds_reader(name, builder)


@contextlib.contextmanager
def _preparing(version_dir):
    """Holds an exclusive lock for preparing the TFDS dataset whose files go to `version_dir`.

    Two processes preparing the same dataset at once would each write a temporary copy, and the
    second to finish would fail to rename its copy into place. The lock file sits beside the
    version's directory; a remote data dir (gs://...) is not locked.
    """
    version_dir = str(version_dir)
    if "://" in version_dir:
        yield
        return
    lock_path = pathlib.Path(version_dir).parent / ".m3d_tf-prepare.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on failure
        yield


def _prepare(builder, tfds_name, manual_dir_from, cache_dir):
    """TFDS's download_and_prepare: offline from `manual_dir_from` when given, else downloading."""
    import tensorflow_datasets as tfds

    if manual_dir_from is not None:
        manual_dir = prepare_fashion_mnist_manual_dir(
            manual_dir_from, cache_dir / "tfds_manual" / tfds_name, type(builder).url_infos
        )
    else:
        manual_dir = None
        _check_reachable((type(builder).url_infos or {}).keys())
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    builder.download_and_prepare(download_config=config)


def open_tfds(name, *, data_dir=None, cache_dir=None, download=True):
    """A Reader over a TFDS image classification dataset (fashion_mnist: offline first).

    Args:
        name: a key of KNOWN_DATASETS, or any TFDS builder name with 'image' and 'label' features.
        data_dir: TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).
        cache_dir: where the restored Fashion-MNIST files go (default: `default_cache_dir()`).
        download: whether TFDS may download a dataset that is not prepared yet (the offline
            Fashion-MNIST never needs to).

    Returns:
        Reader; for fashion_mnist with the TFDS route failing, a Reader over the Debian IDX files.

    Raises:
        ValueError: TFDS has no dataset of that name.
        FileNotFoundError: the dataset could not be prepared, with how to obtain it.
    """
    tfds_name = KNOWN_DATASETS.get(name, name)
    packaged = DEBIAN_FASHION_MNIST_DIR
    offline = tfds_name == "fashion_mnist" and all(
        (packaged / f).is_file() for f in _FASHION_MNIST_FILES
    )
    try:
        return _open_prepared(
            name,
            tfds_name,
            data_dir=data_dir,
            manual_dir_from=packaged if offline else None,
            cache_dir=pathlib.Path(cache_dir) if cache_dir else default_cache_dir(),
            download=download,
        )
    except _NotInTFDS:
        raise
    # Any failure of the TFDS route (a missing dependency, a checksum, a full disk, no network)
    # is reported or, for Fashion-MNIST, answered by reading the same files directly.
    except Exception as error:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if offline:
            warnings.warn(
                f"TFDS could not prepare fashion_mnist ({reason}); reading the IDX files in "
                f"{packaged} directly."
            )
            return dataclasses.replace(
                open_idx_dir(packaged, name=name, class_names=FASHION_MNIST_CLASSES),
                flip=mirroring(name),
            )
        if tfds_name == "fashion_mnist":
            how = (
                f"install the offline copy with `apt-get install dataset-fashion-mnist` (files in "
                f"{packaged}) or connect to the internet once"
            )
        else:
            how = (
                "connect to the internet once (TFDS downloads and caches it), or give the data as "
                "a user source (idx:DIR, npz:FILE, folder:DIR, tfrecord:GLOB)"
            )
        raise FileNotFoundError(f"TFDS could not prepare {tfds_name} ({reason}); {how}.") from error
