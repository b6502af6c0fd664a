"""Training-side helpers (the `train` extra): torch datasets over runs and exports live in `train.loader`,
the deterministic rank-split batch order that training resumes from in `train.sampler`.

This package imports nothing heavy; `uniedit_synth.train.loader` imports torch.
"""
