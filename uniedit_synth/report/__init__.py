"""Looking at a run: the static HTML gallery (`uniedit report`) and one sample's full record (`uniedit inspect`)."""

from .errors import ReportError, SampleNotFoundError
from .html import build_report
from .inspect import format_inspection, inspect_sample

__all__ = ["ReportError", "SampleNotFoundError", "build_report", "format_inspection", "inspect_sample"]
