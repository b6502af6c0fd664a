"""Which samples an export takes and where they go: filters, the stable train/validation split, preference pairs.

Preference pairs (``include_rejects``): a pair is an accepted sample (chosen) and a reject (from `rejects/` or
`attempts/`, where the engine keeps judged attempts that failed before a retry) of the **same id
and the same edit instruction** that reached the judge and so kept its edited image (rejected). Each such
reject makes one pair, so an id with several judged rejects yields several pairs. What happens otherwise:

* accepted sample with no judged reject → exported as a normal (SFT) row only, no pair;
* judged reject with no accepted sample of the same id (or a different instruction) → not exported; it is
  counted in ``unpaired_rejects`` (a pair needs both sides: DPO-style trainers cannot use a lone negative);
* reject that never reached the judge (no edited image) → ignored, counted in ``rejects_without_edit``.

Filters: ``categories`` applies to both sides; ``min_score`` applies to accepted samples (chosen) only, since
rejects are low-scoring by definition. Pairs take the split of their id, like the SFT rows.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..core.records import Sample
from ..method.masks import edit_mask, region_weight
from .options import ExportOptions
from .run_reader import RowRef, RunReader


def split_of(sample_id: str, val_fraction: float) -> str:
    """`validation` for a stable ~val_fraction of ids, else `train`. Depends only on the id (never on the other
    samples or their order), and raising val_fraction only moves ids from train to validation."""
    if val_fraction <= 0:
        return "train"
    bucket = int.from_bytes(hashlib.sha256(sample_id.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "validation" if bucket < val_fraction else "train"


@dataclass(frozen=True)
class PreferencePair:
    """An accepted edit (chosen) and a judged-rejected edit (rejected) of the same id and instruction."""

    chosen: Sample
    rejected: Sample


def mask_and_weight(sample: Sample, options: ExportOptions) -> tuple[np.ndarray, float]:
    """The sample's edit mask (masks.edit_mask with the export's settings) and its region weight."""
    if sample.source_image is None or sample.edited_image is None:
        raise ValueError(f"sample {sample.id!r} has no image pair to compute a mask from")
    mask = edit_mask(
        sample.source_image,
        sample.edited_image,
        threshold=options.mask_threshold,
        close_kernel=options.mask_close_kernel,
        min_component_frac=options.mask_min_component_frac,
        vae_factor=options.mask_factor,
        grid=options.mask_grid,
    )
    return mask, region_weight(mask, options.weight_fn)


class Selection:
    """Streams the samples (and then the pairs) of a run that an export takes, counting what it leaves out."""

    def __init__(self, reader: RunReader, options: ExportOptions, drop: dict[str, str] | None = None) -> None:
        self.reader = reader
        self.options = options
        self.drop = drop or {}  # id → audit flag (export --drop-flagged)
        self.skipped: Counter[str] = Counter()
        self.rows_seen = 0
        self.unpaired_rejects = 0
        self.rejects_without_edit = 0
        self._chosen: dict[str, tuple[RowRef, str | None]] = {}
        self._samples_done = False

    def candidate_count(self) -> int:
        """Rows that will be looked at (for progress bars)."""
        files = list(self.reader.data_files)
        if self.options.include_rejects:
            files += self.reader.reject_files
        return self.reader.count_rows(files)

    def _category_ok(self, sample: Sample) -> bool:
        return self.options.categories is None or sample.task_category in self.options.categories

    def samples(self) -> Iterator[tuple[Sample, str]]:
        """Accepted samples passing the filters, each with its split."""
        for sample, ref in self.reader.iter_samples(self.reader.data_files):
            self.rows_seen += 1
            reason = self._skip_reason(sample)
            if reason is not None:
                self.skipped[reason] += 1
                continue
            if self.options.include_rejects:
                self._chosen[sample.id] = (ref, sample.edit_instruction)
            # a chain's turns share its split (chain_id: the first turn's id; a single turn's own id)
            yield sample, split_of(sample.chain_id or sample.id, self.options.val_fraction)
        self._samples_done = True

    def _skip_reason(self, sample: Sample) -> str | None:
        if not sample.accepted:
            return "not_accepted"
        if sample.id in self.drop:
            return f"flagged_{self.drop[sample.id]}"
        if not self._category_ok(sample):
            return "category"
        if self.options.min_score is not None and (
            sample.score is None or sample.score < self.options.min_score
        ):
            return "below_min_score"
        if sample.source_image is None or sample.edited_image is None:
            return "missing_image"
        if not sample.edit_instruction:
            return "missing_instruction"
        return None

    def pairs(self, flush_every: int = 32) -> Iterator[tuple[PreferencePair, str]]:
        """Preference pairs, each with its split; call after samples() is exhausted (it records the chosen)."""
        if not self.options.include_rejects:
            return
        if not self._samples_done:
            raise RuntimeError("Selection.pairs() needs samples() to be consumed first")
        pending: list[tuple[RowRef, Sample]] = []
        for rejected, _ref in self.reader.iter_samples(self.reader.reject_files):
            self.rows_seen += 1
            if rejected.accepted or not self._category_ok(rejected):
                continue
            if rejected.edited_image is None or rejected.source_image is None:
                self.rejects_without_edit += 1
                continue
            chosen = self._chosen.get(rejected.id)
            if chosen is None or chosen[1] != rejected.edit_instruction:
                self.unpaired_rejects += 1
                continue
            pending.append((chosen[0], rejected))
            if len(pending) >= flush_every:
                yield from self._resolve(pending)
                pending = []
        yield from self._resolve(pending)

    def _resolve(self, pending: list[tuple[RowRef, Sample]]) -> Iterator[tuple[PreferencePair, str]]:
        chosen = self.reader.read_samples([ref for ref, _ in pending])
        for accepted, (_, rejected) in zip(chosen, pending, strict=True):
            yield PreferencePair(accepted, rejected), split_of(accepted.chain_id or accepted.id, self.options.val_fraction)
