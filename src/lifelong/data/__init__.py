"""Data: datasets, experiences, streams and the scenario builders that make streams."""

from lifelong.data.adapter import from_dataset
from lifelong.data.catalog import DATASETS
from lifelong.data.datasets import Dataset, digits, from_arrays, synthetic
from lifelong.data.scenarios import SCENARIOS, class_incremental, domain_incremental, task_incremental
from lifelong.data.blurry import si_blurry
from lifelong.data.fewshot import few_shot
from lifelong.data.files import split_arrays
from lifelong.data.hierarchical import hierarchical
from lifelong.data.recurring import recurring
from lifelong.data.streams import Batch, Experience, Stream, TensorSet
from lifelong.data.corpora import TEXT_DOMAINS, TextDomain
from lifelong.data.text import text_stream
from lifelong.data.tokenizers import BPETokenizer, ByteTokenizer, Tokenizer

__all__ = [
    "DATASETS", "SCENARIOS", "Batch", "Dataset", "Experience", "Stream", "TensorSet", "class_incremental",
    "digits", "domain_incremental", "from_arrays", "synthetic", "task_incremental",
    "few_shot", "from_dataset", "hierarchical", "recurring", "si_blurry", "split_arrays",
    "BPETokenizer", "ByteTokenizer", "TEXT_DOMAINS", "TextDomain", "Tokenizer", "text_stream",
]
