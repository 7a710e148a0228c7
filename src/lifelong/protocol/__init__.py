"""Evaluation protocols: multi-seed runs, sweeps and tune-then-evaluate."""
