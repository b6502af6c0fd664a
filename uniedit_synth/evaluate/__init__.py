"""`uniedit eval`: run an editor (a pipeline's edit backend, a plugin, a tuned Janus-Pro) on a public
reasoning-edit benchmark or an export's split, judged by the benchmark's own protocol through the engine's
cached, rate-limited model calls. Layer: above the engine, beside export/ and audit/."""

from .runner import EvalOptions, compare, format_report, load_report, run_eval

__all__ = ["EvalOptions", "compare", "format_report", "load_report", "run_eval"]
