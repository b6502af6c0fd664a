"""uniedit-synth: turn VQA data into reasoning-heavy image-editing training data (Uni-Edit)."""

__version__ = "0.1.0"
