"""Multi-turn chains (`stages.chain`, `--turns N`): the turns after a shard's first, run by the shard worker.

After turn 1 of a shard's records (the worker's usual path), every accepted record starts a chain. Turn k's
source is turn k-1's accepted edited image, byte for byte, and its question is about that image with an answer
known by construction (offline world: offline/chain.py; any other image: method/chain.py). Each turn runs the
stages after the caps (rewrite → edit ⇄ judge, the same gates) in waves of the shard's records, so with batch-mode
stages a chain's next turn waits for its previous turn's job. Classification is not repeated: the chain made the
question and knows its category.

A chain stops at its first failed turn. It keeps its verified prefix when that has at least `min_turns` turns
(the failed turn's row goes to attempts/, with its turn and reason); otherwise the record leaves as a reject whose
row is the failed turn's, and the prefix's rows go to attempts/. Either way the record is counted once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..core.records import RejectReason, Sample, VQARecord
from ..method.chain import fact_question
from ..offline.chain import NoNextTurn, is_scene_turn, next_scene_turn
from ..stages.base import Rejected, WorkItem

EXHAUSTED = Rejected(RejectReason.budget_exhausted, "the run's --max-cost was reached before this turn")


@dataclass
class ChainRows:
    """What a shard's later turns add to its files and manifest entry."""

    data: list[Sample] = field(default_factory=list)  # turns 2..k of kept chains
    attempts: list[Sample] = field(default_factory=list)  # breaking turns of kept chains, dropped prefixes
    items: list[WorkItem] = field(default_factory=list)  # every later turn (ledgers: calls, cost, cache keys)
    samples: list[Sample] = field(default_factory=list)  # the rows of `items`, in order
    counts: dict[str, Any] = field(default_factory=dict)  # the manifest's `chains` entry
    #: a dropped chain's exit row is its failed turn's (counted in `samples`) instead of its first turn's
    cost_adjust_usd: float = 0.0
    #: record index -> its first turn's row, for the records whose exit row became a later turn's
    replaced: dict[int, Sample] = field(default_factory=dict)

    @property
    def cost_usd(self) -> float:
        """What the later turns add to the shard's cost (every row's cost counted once)."""
        return sum(s.cost_usd for s in self.samples) + self.cost_adjust_usd

    def judged_rows(self, samples: list[Sample], attempts: list[Sample]) -> list[Sample]:
        """Every row of the shard once (first turns, later turns, judged failures before a retry), for the
        judge cascade's counters; `attempts` are the first turns' failures."""
        later_failures = [a for item in self.items for a in item.failed_attempts]
        return self.first_rows(samples) + attempts + self.samples + later_failures

    def first_rows(self, samples: list[Sample]) -> list[Sample]:
        """The shard's first-turn rows (for the call index), where `samples` holds each record's exit row."""
        return [self.replaced.get(i, s) for i, s in enumerate(samples)]


def turn_id(chain_id: str, turn: int) -> str:
    return chain_id if turn == 1 else f"{chain_id}~t{turn}"


def next_record(previous: WorkItem, row: Sample, turn: int, seed: int, avoid: tuple[str, ...]) -> VQARecord:
    """Turn `turn`'s record: the previous turn's edited image and a question about it (NoNextTurn if none)."""
    chain_id = row.chain_id or row.id
    record = previous.record
    image = previous.edited_image or b""
    meta = record.meta if isinstance(record.meta, dict) else {}
    if is_scene_turn(meta, previous.edit_program):
        question, answer, category, new_meta = next_scene_turn(
            meta, previous.edit_program or {}, image, record.question, seed=seed, chain_id=chain_id, turn=turn,
            avoid_categories=avoid, prefer=previous.task_category,
        )
    else:
        fact = fact_question(previous.plan, previous.intended_effect, previous.instruction, record.question,
                             seed=seed, chain_id=chain_id, turn=turn)
        if fact is None:
            raise NoNextTurn("the previous turn established no fact to ask about")
        question, answer = fact
        category = "yes_no"
        new_meta = {k: v for k, v in meta.items() if not k.startswith("_")}
        new_meta["answer_space"] = ["yes", "no"]
    new_meta["chain"] = {"chain_id": chain_id, "turn": turn, "parent_id": row.id}
    return VQARecord(id=turn_id(chain_id, turn), source=record.source, image=image, image_path=None,
                     question=question, answer=answer, category=category, meta=new_meta)


async def run_chains(proc: Any, shard: int, items: list[WorkItem], outcomes: list[Sample | None],
                     funnel: dict[str, Counter], batch: Counter, exhausted: bool) -> ChainRows:
    """Run turns 2..N of the shard's chains with `proc`, the shard's worker (engine/worker.py ShardProcessor,
    whose stage steps each turn reuses); `outcomes` (one exit row per record) is updated for the chains
    that end with fewer than `min_turns` turns. Returns the rows and counts the turns add."""
    spec = proc.config.stages.chain
    out = ChainRows()
    if spec.turns == 1:
        return out
    kept: dict[int, list[Sample]] = {i: [s] for i, s in enumerate(outcomes) if s is not None and s.accepted}
    last: dict[int, WorkItem] = {i: items[i] for i in kept}
    broken: dict[int, Sample] = {}
    avoid = tuple(proc.config.stages.classify.drop_categories)
    for turn in range(2, spec.turns + 1):
        starts: list[tuple[int, WorkItem]] = []
        for i in kept:
            if i in broken:
                continue
            previous, row = last[i], kept[i][-1]
            item = WorkItem(record=VQARecord(id=turn_id(row.chain_id or row.id, turn), source=previous.record.source),
                            shard=shard, turn=turn, chain_id=row.chain_id or row.id, parent_id=row.id)
            item.ledger.owner = item.record.id
            try:
                item.record = next_record(previous, row, turn, proc.config.seed, avoid)
            except NoNextTurn as exc:
                item.record.question, item.image = previous.record.question, previous.edited_image or b""
                broken[i] = proc._reject(item, Rejected(RejectReason.rewrite_failed, f"chain turn {turn}: {exc}"))
                out.items.append(item)
                out.samples.append(broken[i])
                continue
            item.image = item.record.image or b""
            item.task_category = item.record.category
            item.process_answer = item.record.answer
            starts.append((i, item))
        if not starts:
            break
        turn_items = [item for _, item in starts]
        rows: list[Sample | None] = [None] * len(turn_items)

        async def one(j: int, counts: dict, turn_items: list[WorkItem] = turn_items, rows: list = rows) -> None:
            if exhausted:  # the shard started past the budget: later turns make no call either
                proc._finish(j, turn_items[j], proc._reject(turn_items[j], EXHAUSTED), rows)
            else:
                await proc._back(j, turn_items[j], rows, counts)

        await proc._in_waves(shard, range(len(turn_items)), turn_items, funnel, batch, one)
        for (i, _), item, row in zip(starts, turn_items, rows, strict=True):
            if row is None:
                raise RuntimeError(f"shard {shard}: chain turn {turn} of {item.record.id} left no outcome")
            out.items.append(item)
            out.samples.append(row)
            out.attempts.extend(item.failed_attempts)  # judged failures before a retry, as on turn 1
            if row.accepted:
                kept[i].append(row)
                last[i] = item
            else:
                broken[i] = row
    lengths: Counter = Counter()
    breaks: dict[str, Counter] = {}
    for i, rows_of in kept.items():
        failed = broken.get(i)
        if failed is not None:
            breaks.setdefault(str(failed.turn), Counter())[failed.reject_reason.value if failed.reject_reason else "?"] += 1
        if len(rows_of) >= spec.min_turns:
            lengths[str(len(rows_of))] += 1
            out.data.extend(rows_of[1:])
            if failed is not None:
                failed.reject_detail = f"chain broke at turn {failed.turn}: {failed.reject_detail or ''}"[:2000]
                out.attempts.append(failed)
            continue
        # too short: the record leaves through its failed turn's row; the verified prefix is kept as negatives
        assert failed is not None  # a chain that ran every turn has `turns` >= min_turns rows
        failed.reject_detail = (f"chain broke at turn {failed.turn} after {len(rows_of)} verified turn(s), fewer "
                                f"than min_turns {spec.min_turns}: {failed.reject_detail or ''}")[:2000]
        out.cost_adjust_usd += rows_of[0].cost_usd - failed.cost_usd
        out.replaced[i] = rows_of[0]
        outcomes[i] = failed
        for row in rows_of:
            out.attempts.append(row.model_copy(update={
                "accepted": False, "reject_reason": failed.reject_reason,
                "reject_detail": f"dropped with its chain (broke at turn {failed.turn})"}))
    for i, rows_of in kept.items():  # the live progress counts a chain's record when the chain ends
        proc.count_exit(outcomes[i] if i in out.replaced else rows_of[0])
    failed_first = sum(1 for s in outcomes if s is not None and not s.accepted and s.turn == 1)
    out.counts = {
        "turns": spec.turns,
        "min_turns": spec.min_turns,
        "lengths": dict(sorted(lengths.items())),
        "full": lengths.get(str(spec.turns), 0),
        "dropped": len(kept) - sum(lengths.values()),
        "breaks": {t: dict(c) for t, c in sorted(breaks.items())},
        "failed_first_turn": failed_first,
    }
    return out
