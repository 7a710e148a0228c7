"""Continual test-time adaptation: a model trained on clean data meets an unlabeled stream of shifted
domains and adapts while it predicts (Wang et al. 2021, Tent; Wang et al. 2022, CoTTA)."""

from lifelong.tta.corruptions import CORRUPTIONS, Domain, corrupt, shifted_stream
from lifelong.tta.loop import TTAResult, adapt, run_tta
from lifelong.tta.methods import METHODS, BNAdapt, CoTTA, Source, Tent, TestTimeMethod

__all__ = [
    "CORRUPTIONS", "METHODS", "BNAdapt", "CoTTA", "Domain", "Source", "TTAResult", "Tent", "TestTimeMethod",
    "adapt", "corrupt", "run_tta", "shifted_stream",
]
