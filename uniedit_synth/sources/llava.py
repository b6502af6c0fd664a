"""The LLaVA conversation format (LLaVA-OneVision-1.5 instruct and kin): rows `{id, image, conversations}`
(or `{images, messages}` with role/content messages) become one VQA record per human/gpt turn pair, or for
the first pair only. Works on JSON/JSONL files and on tables (parquet, HF).

The preset `llava-onevision` reads LLaVA-OneVision-1.5 instruct data as the Uni-Edit release does
(data_gen/first_process_ov_example.py): the first turn only (`source.options.turns: all` keeps every turn),
rows with exactly one image (others are `invalid_input`), the question after the image placeholder
(`content.split('img_end>\\n')[-1]`), and a uniform sample per `subject` capped as in the release
(`LLAVA_ONEVISION_CAPS`; subjects outside the release's list are not read).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from ..core.errors import SourceError
from ..core.records import VQARecord, content_key
from .rows import RowProblem, as_text, image_from_value, image_identity, json_safe, scrub

HUMAN_ROLES = frozenset({"human", "user"})
ASSISTANT_ROLES = frozenset({"gpt", "assistant", "model", "bot"})
_IMAGE_TOKEN = re.compile(r"<image>")
#: the end of LLaVA-OneVision-1.5's image placeholder; the release keeps what follows it
IMAGE_END = "img_end>\n"

Turns = Literal["first", "all"]

#: the release's per-subject caps (first_process_ov_example.py: `limits`); "*": 0 = other subjects not read
LLAVA_ONEVISION_CAPS: dict[str, int] = {
    "allava_instruct_laion4v": 20_000,
    "arxiv_figs": 20_000,
    "CLEVR": 120_000,
    "CLEVR-Math": 120_000,
    "coco": 20_000,
    "code_feedback_66k": 20_000,
    "geomverse": 20_000,
    "ocr": 60_000,
    "sherlock": 20_000,
    "vg": 120_000,
    "vsr": 120_000,
    "*": 0,
}
LLAVA_ONEVISION_SUBJECT_KEY = "subject"


def strip_image_tokens(text: str) -> str:
    return _IMAGE_TOKEN.sub("", text.split(IMAGE_END)[-1]).strip()


def conversation_pairs(conversations: Any) -> list[tuple[str, str]]:
    """(question, answer) for each human message directly followed by an assistant message; system
    messages and unpaired messages are skipped. RowProblem when the conversation is not a list of
    `{from, value}` (or `{role, content}`) messages."""
    if not isinstance(conversations, (list, tuple)):
        raise RowProblem("malformed conversations (not a list)")
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for message in conversations:
        if not isinstance(message, Mapping):
            raise RowProblem("malformed conversations (a message is not an object)")
        role = str(message.get("from", message.get("role", ""))).strip().lower()
        value = message.get("value", message.get("content"))
        if role in HUMAN_ROLES:
            pending = as_text(value, "question")
        elif role in ASSISTANT_ROLES and pending is not None:
            pairs.append((pending, as_text(value, "answer")))
            pending = None
    return pairs


class ConversationMapper:
    """One LLaVA row → one record per human/gpt pair (`turns: all`) or for the first pair only.

    Record ids are `<label>/<row id>#<turn>` (turn counts pairs from 0); a row without an id uses a hash
    of its image and conversation. Rows that cannot be used still yield one invalid record per pair
    (or one, `#0`, when no pair can be read) so that every row is accounted for.
    """

    def __init__(
        self,
        *,
        label: str,
        turns: Turns = "all",
        image_column: str = "image",
        conversations_column: str = "conversations",
        id_column: str = "id",
        subject_key: str | None = None,
    ) -> None:
        if turns not in ("first", "all"):
            raise SourceError(f"source.options.turns must be 'first' or 'all', got {turns!r}")
        self.label = label
        self.turns = turns
        self.image_column: str | None = image_column
        self.conversations_column = conversations_column
        self.id_column = id_column
        self.subject_key = subject_key

    def check_columns(self, available: list[str], where: str) -> None:
        missing = [c for c in (self.conversations_column, self.image_column) if c and c not in available]
        if missing:
            raise SourceError(
                f"{where}: LLaVA rows need columns {self.conversations_column!r} and {self.image_column!r}; "
                f"missing {missing}. Available columns: {', '.join(available)}"
            )

    def map(self, row: Mapping[str, Any]) -> list[VQARecord]:
        image_problem: str | None = None
        image: bytes | None = None
        image_path: str | None = None
        try:
            image, image_path = image_from_value(row.get(self.image_column) if self.image_column else None)
        except RowProblem as exc:
            image_problem = exc.detail
        conversations = row.get(self.conversations_column)
        try:
            pairs = conversation_pairs(conversations)
            conversation_problem = None if pairs else "no human/gpt turn pair in conversations"
        except RowProblem as exc:
            pairs, conversation_problem = [], exc.detail

        own_id = row.get(self.id_column)
        if own_id is None or (isinstance(own_id, str) and not own_id.strip()):
            base = content_key(image_identity(image, image_path), scrub(repr(json_safe(conversations))))
        else:
            base = scrub(str(own_id).strip())
        meta = {
            k: json_safe(v)
            for k, v in row.items()
            if k not in (self.image_column, self.conversations_column, self.id_column)
        }
        if self.subject_key and self.subject_key in row:
            meta[self.subject_key] = json_safe(row[self.subject_key])
        meta["turns"] = len(pairs)

        if not pairs:
            detail = "; ".join(p for p in (image_problem, conversation_problem) if p)
            return [self._record(f"{base}#0", image, image_path, "", "", dict(meta, turn=0), detail)]
        if self.turns == "first":
            pairs = pairs[:1]
        return [
            self._record(
                f"{base}#{turn}",
                image,
                image_path,
                strip_image_tokens(question),
                answer.strip(),
                dict(meta, turn=turn),
                image_problem,
            )
            for turn, (question, answer) in enumerate(pairs)
        ]

    def _record(
        self,
        key: str,
        image: bytes | None,
        image_path: str | None,
        question: str,
        answer: str,
        meta: dict[str, Any],
        invalid: str | None,
    ) -> VQARecord:
        return VQARecord(
            id=f"{self.label}/{key}",
            source=self.label,
            image=image,
            image_path=image_path,
            question=question,
            answer=answer,
            meta=meta,
            invalid=invalid or None,
        )


def looks_like_llava(row: Any) -> bool:
    return isinstance(row, Mapping) and isinstance(row.get("conversations"), (list, tuple))
