"""Continual-learning strategies and their registry.

Adding a method: one file with a :class:`Strategy` subclass (a dataclass whose fields are its
hyperparameters), one line in :data:`STRATEGIES`, one test file.
"""

from lifelong.strategies.agem import AGEM
from lifelong.strategies.base import Strategy
from lifelong.strategies.bn_only import BNOnly
from lifelong.strategies.clr import CLR
from lifelong.strategies.coda_prompt import CODAPrompt
from lifelong.strategies.cuber import CUBER
from lifelong.strategies.cumulative import Cumulative
from lifelong.strategies.der import DER, DERpp
from lifelong.strategies.dst import DST
from lifelong.strategies.dualprompt import DualPrompt
from lifelong.strategies.er import ER
from lifelong.strategies.er_ace import ERACE
from lifelong.strategies.ewc import EWC
from lifelong.strategies.fetril import FeTrIL
from lifelong.strategies.gdumb import GDumb
from lifelong.strategies.gpm import GPM
from lifelong.strategies.hypernetwork import Hypernetwork
from lifelong.strategies.icarl import ICaRL
from lifelong.strategies.joint import Joint
from lifelong.strategies.kv_bottleneck import KVBottleneck
from lifelong.strategies.l2 import L2
from lifelong.strategies.l2p import L2P
from lifelong.strategies.lae import LAE
from lifelong.strategies.lwf import LwF
from lifelong.strategies.mas import MAS
from lifelong.strategies.naive import Naive
from lifelong.strategies.ncm import NCM
from lifelong.strategies.onpro import OnPro
from lifelong.strategies.pcr import HPCR, PCR
from lifelong.strategies.psrd import PSRD
from lifelong.strategies.ranpac import RanPAC
from lifelong.strategies.replay import ReplayMixture
from lifelong.strategies.sequential_tuning import Adapter, LoRA
from lifelong.strategies.si import SI
from lifelong.strategies.slca import SLCA
from lifelong.strategies.tame import TAME
from lifelong.strategies.uer import UER
from lifelong.strategies.view_batch import ViewBatch

STRATEGIES: dict[str, type[Strategy]] = {
    "naive": Naive,
    "joint": Joint,
    "cumulative": Cumulative,
    "er": ER,
    "replay": ReplayMixture,
    "ewc": EWC,
    "lwf": LwF,
    "er_ace": ERACE,
    "der": DER,
    "derpp": DERpp,
    "gdumb": GDumb,
    "agem": AGEM,
    "icarl": ICaRL,
    "si": SI,
    "mas": MAS,
    "l2": L2,
    "ncm": NCM,
    "slca": SLCA,
    "fetril": FeTrIL,
    "uer": UER,
    "pcr": PCR, "hpcr": HPCR, "onpro": OnPro, "psrd": PSRD, "tame": TAME,
    "gpm": GPM, "cuber": CUBER, "dst": DST, "clr": CLR, "bn_only": BNOnly, "hypernetwork": Hypernetwork,
    "l2p": L2P, "dualprompt": DualPrompt, "coda_prompt": CODAPrompt,
    "lora": LoRA, "adapter": Adapter, "lae": LAE, "ranpac": RanPAC,
    "kv_bottleneck": KVBottleneck, "view_batch": ViewBatch,
}

__all__ = ["AGEM", "CLR", "CUBER", "DER", "DST", "ER", "ERACE", "EWC", "GPM", "HPCR", "L2", "L2P", "LAE", "MAS", "NCM",
           "PCR", "PSRD", "SI", "SLCA", "STRATEGIES", "TAME", "UER", "Adapter", "BNOnly", "CODAPrompt", "Cumulative",
           "DERpp", "DualPrompt", "FeTrIL", "GDumb", "Hypernetwork", "ICaRL", "Joint", "KVBottleneck", "LoRA", "LwF",
           "Naive", "OnPro", "RanPAC", "ReplayMixture", "Strategy", "ViewBatch"]
