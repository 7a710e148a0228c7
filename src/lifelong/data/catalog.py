"""The dataset registry: ``dataset.name`` in a run configuration -> the function that builds it.

Its entries come from two modules, the built-in datasets (:mod:`lifelong.data.datasets`) and the file
loaders (:mod:`lifelong.data.files`), and the file loaders build on :class:`~lifelong.data.datasets.Dataset`;
the registry is its own module above both so that neither has to import the other back.
"""

from __future__ import annotations

from lifelong.data import adapter, files
from lifelong.data.datasets import digits, synthetic

DATASETS = {"digits": digits, "synthetic": synthetic, "csv": files.csv, "image_folder": files.image_folder,
            "mnist": files.mnist, "fashion_mnist": files.fashion_mnist, "cifar10": files.cifar10,
            "cifar100": files.cifar100, "python": adapter.python}
