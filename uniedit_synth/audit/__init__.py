"""Data quality: `uniedit audit` (checks.py), benchmark decontamination and input dedup (screen.py), the
fingerprints and indexes they share (fingerprint.py, index.py) and the benchmark readers (benchmarks.py)."""

from .benchmarks import PRESETS, Benchmark, BenchmarkError, load_benchmark
from .checks import FLAG_KINDS, flagged_ids, format_audit, run_audit
from .screen import Decontaminator, InputScreen, ScreenEntry

__all__ = ["FLAG_KINDS", "PRESETS", "Benchmark", "BenchmarkError", "Decontaminator", "InputScreen", "ScreenEntry",
           "flagged_ids", "format_audit", "load_benchmark", "run_audit"]
