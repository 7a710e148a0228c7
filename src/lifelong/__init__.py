"""lifelong: continual learning of neural networks under a compute budget, on PyTorch.

The public API: build a :class:`Stream` with a scenario builder, a model, a strategy, then
:func:`train`; read the accuracy matrix, metrics and cost from the returned :class:`RunResult`.
"""

from lifelong.config import OptimConfig, RunConfig, RunSettings
from lifelong.data import (
    Batch,
    Dataset,
    Experience,
    Stream,
    TensorSet,
    class_incremental,
    digits,
    domain_incremental,
    few_shot,
    from_arrays,
    from_dataset,
    hierarchical,
    recurring,
    si_blurry,
    split_arrays,
    synthetic,
    task_incremental,
)
from lifelong.errors import ConfigError, DataError, LifelongError, MissingFileError, ResumeError, TrainingError
from lifelong.errors import StorageError
from lifelong.experiment import run_config
from lifelong.models import cnn, mlp, resnet18, resnet32
from lifelong.runner.checkpoint import CheckpointSettings
from lifelong.runner import Observer, ResultsStore, RunResult, TrainState, train
from lifelong.runner.online import train_online
from lifelong.strategies import (
    AGEM,
    DER,
    ER,
    ERACE,
    EWC,
    L2,
    MAS,
    NCM,
    SI,
    SLCA,
    STRATEGIES,
    UER,
    Cumulative,
    DERpp,
    FeTrIL,
    GDumb,
    ICaRL,
    Joint,
    LwF,
    Naive,
    Strategy,
)

__all__ = [
    "CheckpointSettings", "StorageError",
    "few_shot", "hierarchical", "recurring", "si_blurry", "split_arrays", "train_online",
    "AGEM", "DER", "DERpp", "ERACE", "FeTrIL", "GDumb", "ICaRL", "L2", "MAS", "NCM", "SI", "SLCA", "UER",
    "ER", "EWC", "STRATEGIES", "Batch", "ConfigError", "Cumulative", "DataError", "Dataset", "Experience",
    "Joint", "LifelongError", "LwF", "MissingFileError", "Naive", "Observer", "OptimConfig", "ResultsStore",
    "ResumeError", "RunConfig", "RunResult", "RunSettings", "Stream", "Strategy", "TensorSet", "TrainState",
    "TrainingError", "class_incremental", "cnn", "digits", "domain_incremental", "from_arrays", "from_dataset", "mlp",
    "resnet18", "resnet32", "run_config", "synthetic", "task_incremental", "train",
]
