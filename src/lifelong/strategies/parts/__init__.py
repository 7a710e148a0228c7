"""The parts continual-learning methods hold, one module each, none importing a method:

- ``memory``: replay buffers (reservoir, class-balanced) and the reservoir memory a replay method holds;
- ``exemplars``: herded exemplars per class (iCaRL);
- ``distillation``: a frozen teacher copy and the distillation loss (LwF, iCaRL);
- ``penalties`` and ``importance``: the anchor and quadratic penalty of weight regularisers, and the
  importance estimates they weigh (Fisher, output sensitivity);
- ``subspaces``: per-layer gradient subspaces (GPM, CUBER);
- ``task_tables``: per-task copies of model tensors (DST, CLR, BN-only);
- ``features``: features and class statistics (NCM, FeTrIL, SLCA, RanPAC, iCaRL);
- ``contrastive``: contrastive losses on features: proxies, similarity structure, prototypes (UER's cosine
  logits, PCR, HPCR, OnPro);
- ``backbones`` and ``adaptation``: pretrained backbone files, and adapt-then-freeze (first-session adaptation);
- ``prompts`` and ``tuning``: prompt pools on a ViT (L2P, DualPrompt, CODA-Prompt) and LoRA/adapter modules.

A method composes the parts it needs (``memory = ReservoirMemory(...)``); no method inherits them.
"""
