"""Continual test-time adaptation: a model trained on clean data meets an unlabeled stream of shifted
domains and adapts while it predicts (Wang et al. 2021, Tent; Wang et al. 2022, CoTTA), also in
label-correlated streams and batches of one (Tomar et al. 2024, UnMix-TNS; Doebler et al. 2023, RMT)."""

from lifelong.tta.corruptions import CORRUPTIONS, ORDERS, Domain, corrupt, label_order, shifted_stream
from lifelong.tta.loop import TTAResult, adapt, run_tta
from lifelong.tta.methods import (
    METHODS, RMT, BNAdapt, CoTTA, OpenSetFilter, Source, Tent, TestTimeMethod, UnMixTNS, build_method,
)

__all__ = [
    "CORRUPTIONS", "METHODS", "ORDERS", "RMT", "BNAdapt", "CoTTA", "Domain", "OpenSetFilter", "Source",
    "TTAResult", "Tent", "TestTimeMethod", "UnMixTNS", "adapt", "build_method", "corrupt", "label_order",
    "run_tta", "shifted_stream",
]
