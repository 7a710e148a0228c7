"""The dataset registry: ``dataset.name`` in a run configuration -> the function that builds it.

Its entries come from the built-in datasets (:mod:`lifelong.data.datasets`), the file loaders
(:mod:`lifelong.data.files`), a user's ``torch`` dataset (:mod:`lifelong.data.adapter`) and text domains
(:mod:`lifelong.data.text`, a token corpus that only the ``text_domains`` scenario cuts into a stream) and
Hugging Face datasets from local files (:mod:`lifelong.data.hf`: images read lazily, or text domains).
The file loaders build on :class:`~lifelong.data.datasets.Dataset`; the registry is its own module
above them so that none has to import another back.
"""

from __future__ import annotations

from lifelong.data import adapter, files, hf, text
from lifelong.data.datasets import digits, synthetic

DATASETS = {"digits": digits, "synthetic": synthetic, "csv": files.csv, "image_folder": files.image_folder,
            "mnist": files.mnist, "fashion_mnist": files.fashion_mnist, "cifar10": files.cifar10,
            "cifar100": files.cifar100, "python": adapter.python,
            "text": text.text, "hf": hf.hf}
