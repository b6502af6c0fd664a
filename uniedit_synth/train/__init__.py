"""Training-side helpers (the `train` extra): torch datasets over runs and exports live in `train.loader`.

This package imports nothing heavy; `uniedit_synth.train.loader` imports torch.
"""
