"""Data for training loops: datasets, a resumable loader, batch transforms, readers, downloads.

Everything here returns NumPy arrays in one convention: inputs float32 ``(N, C, *spatial)``
(images ``(N, C, H, W)``, sequences ``(N, C, L)``), class labels int64 ``(N,)``.

- ``Dataset``, ``ArrayDataset``, ``stratified_split``: samples and splits.
- ``DataLoader``: batches, seeded shuffling, ``state_dict()`` to resume mid-epoch.
- ``Normalize``, ``RandomTranslate``, ``PermutePositions``, ``Compose``, ``translate``: batch
  transforms.
- ``mnist1d``, ``mnist1d_shuffled``, ``digits``, ``mnist5k``, ``DATASETS``,
  ``available_datasets``, ``load_dataset``: built-in datasets that work offline.
- ``read_idx``, ``write_idx``, ``load_mnist_idx``, ``read_cifar_batch``, ``load_cifar10``,
  ``load_cifar100``, ``ImageFolder``: files a user brings.
- ``download``, ``get_cache_dir``: sha256-verified atomic downloads into the cache.
"""

from .builtin import (
    DATASETS,
    DatasetInfo,
    available_datasets,
    digits,
    load_dataset,
    mnist1d,
    mnist1d_shuffled,
    mnist5k,
)
from .dataset import ArrayDataset, Dataset, stratified_split
from .downloads import ChecksumError, DownloadError, download, get_cache_dir, sha256_file
from .loader import DataLoader
from .readers import (
    ImageFolder,
    load_cifar10,
    load_cifar100,
    load_mnist_idx,
    read_cifar_batch,
    read_idx,
    write_idx,
)
from .transforms import Compose, Normalize, PermutePositions, RandomTranslate, translate

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "ChecksumError",
    "Compose",
    "DataLoader",
    "Dataset",
    "DatasetInfo",
    "DownloadError",
    "ImageFolder",
    "Normalize",
    "PermutePositions",
    "RandomTranslate",
    "available_datasets",
    "digits",
    "download",
    "get_cache_dir",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_mnist_idx",
    "mnist1d",
    "mnist1d_shuffled",
    "mnist5k",
    "read_cifar_batch",
    "read_idx",
    "sha256_file",
    "stratified_split",
    "translate",
    "write_idx",
]
