"""lifelong: continual learning of neural networks under a compute budget, on PyTorch.

The public API: build a :class:`Stream` with a scenario builder, a model, a strategy, then
:func:`train`; read the accuracy matrix, metrics and cost from the returned :class:`RunResult`.

Every name below is imported from its module on first use (PEP 562, :mod:`lifelong.lazy`):
``import lifelong`` is instant and the command line's light commands never import torch, while
``import lifelong as ll; ll.train(...)`` and ``from lifelong import ER`` work as usual.
"""

from typing import TYPE_CHECKING

from lifelong.errors import (
    ConfigError,
    DataError,
    LifelongError,
    MissingFileError,
    ResumeError,
    StorageError,
    StrategyError,
    TrainingError,
)
from lifelong.lazy import lazy_attributes

if TYPE_CHECKING:
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
        text_stream,
    )
    from lifelong.experiment import run_config
    from lifelong.models import causal_lm, cnn, gpt, hf, mlp, resnet18, resnet32, save_pretrained, vit
    from lifelong.models.weights import load_weights
    from lifelong.runner import Observer, ResultsStore, RunResult, TrainState, train
    from lifelong.runner.checkpoint import CheckpointSettings
    from lifelong.runner.online import train_online
    from lifelong.runner.tracking import CSVLog, MLflowLog, TensorBoardLog, WandbLog
    from lifelong.strategies import (
        AGEM,
        CLR,
        CUBER,
        DER,
        DST,
        ER,
        ERACE,
        EWC,
        GPM,
        HPCR,
        L2,
        L2P,
        LAE,
        MAS,
        NCM,
        PCR,
        PSRD,
        SI,
        SLCA,
        STRATEGIES,
        TAME,
        UER,
        Adapter,
        BNOnly,
        CODAPrompt,
        Cumulative,
        DERpp,
        DualPrompt,
        FeTrIL,
        GDumb,
        Hypernetwork,
        ICaRL,
        Joint,
        KVBottleneck,
        LoRA,
        LwF,
        Naive,
        OnPro,
        RanPAC,
        ReplayMixture,
        Strategy,
        ViewBatch,
    )

_EXPORTS = {
    **dict.fromkeys(("OptimConfig", "RunConfig", "RunSettings"), "lifelong.config"),
    **dict.fromkeys(("Batch", "Dataset", "Experience", "Stream", "TensorSet", "class_incremental", "digits",
                     "domain_incremental", "few_shot", "from_arrays", "from_dataset", "hierarchical", "recurring", "si_blurry",
                     "split_arrays", "synthetic", "task_incremental", "text_stream"), "lifelong.data"),
    "run_config": "lifelong.experiment",
    **dict.fromkeys(("causal_lm", "cnn", "gpt", "hf", "mlp", "resnet18", "resnet32", "save_pretrained", "vit"),
                    "lifelong.models"),
    "load_weights": "lifelong.models.weights",
    **dict.fromkeys(("Observer", "ResultsStore", "RunResult", "TrainState", "train"), "lifelong.runner"),
    "CheckpointSettings": "lifelong.runner.checkpoint",
    "train_online": "lifelong.runner.online",
    **dict.fromkeys(("CSVLog", "MLflowLog", "TensorBoardLog", "WandbLog"), "lifelong.runner.tracking"),
    **dict.fromkeys(("AGEM", "CLR", "CODAPrompt", "CUBER", "DER", "DST", "ER", "ERACE", "EWC", "GPM", "HPCR", "L2",
                     "L2P", "LAE", "MAS", "NCM", "PCR", "PSRD", "SI", "SLCA", "STRATEGIES", "UER", "Adapter", "BNOnly",
                     "Cumulative", "DERpp", "DualPrompt", "FeTrIL", "GDumb", "Hypernetwork", "ICaRL", "Joint", "LoRA",
                     "LwF", "Naive", "OnPro", "RanPAC", "ReplayMixture", "Strategy", "TAME", "KVBottleneck",
                     "ViewBatch"), "lifelong.strategies"),
}
__all__ = sorted([*_EXPORTS, "ConfigError", "DataError", "LifelongError", "MissingFileError", "ResumeError",
                  "StorageError", "StrategyError", "TrainingError"])
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
