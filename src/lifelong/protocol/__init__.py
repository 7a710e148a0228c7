"""Evaluation protocols: continual-evaluation curves, multi-seed runs, sweeps and tune-then-evaluate."""
