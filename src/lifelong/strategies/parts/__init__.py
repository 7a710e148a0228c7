"""The parts continual-learning methods hold: replay memories, penalties and the importance estimates
they weigh, distillation targets, features and class statistics, backbones, gradient subspaces, per-task
parameter tables, prompt pools and tuning modules. A method composes the parts it needs (``memory =
ReservoirMemory(...)``); no method inherits them. Each module says what it holds; none imports a method.
"""
