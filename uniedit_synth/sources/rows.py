"""Row mapping: one raw row (a dict from a table, JSON line or CSV line) becomes VQARecords — column
mapping, answer reduction, record ids, text decoding checks and the JSON-safe `meta`."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core.errors import SourceError
from ..core.records import TASK_CATEGORIES, VQARecord, content_key

ROLES = ("image", "question", "answer", "id", "category", "subject")

#: columns tried, in order, when neither `columns` nor a preset names one
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "image": (
        "image",
        "images",
        "img",
        "image_path",
        "file_name",
        "image_file",
        "filename",
        "path",
        "image_url",
        "url",
    ),
    "question": ("question", "query", "prompt", "instruction"),
    "answer": ("answer", "answers", "label", "labels", "response", "multiple_choice_answer"),
    "id": ("id", "question_id", "qid", "uid", "sample_id"),
    "category": ("task_category", "category"),
    "subject": (),
}

_SURROGATES = re.compile("[\ud800-\udfff]")
_SPACES = re.compile(r"\s+")


class RowProblem(Exception):
    """A row that cannot become a usable record; it is still yielded, with `invalid` set to the detail."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RowMapper(Protocol):
    """Turns raw rows into records; `image_column` is the column holding images (or paths), if any."""

    image_column: str | None

    def map(self, row: Mapping[str, Any]) -> list[VQARecord]: ...

    def check_columns(self, available: list[str], where: str) -> None: ...


# ----------------------------------------------------------------------------------------------- text


def has_bad_text(text: str) -> bool:
    """True when text carries undecodable bytes (sources decode with `surrogateescape`)."""
    return bool(_SURROGATES.search(text))


def scrub(text: str) -> str:
    return _SURROGATES.sub("\ufffd", text)


#: answer columns that hold a list of annotators' answers by their name (VQAv2 `answers`, ChartQA `labels`,
#: A-OKVQA `direct_answers`): the majority vote reduces them. A preset's own answer column is one too.
ANSWER_LIST_COLUMNS = frozenset({"answers", "labels", "direct_answers"})


def as_text(value: Any, field_name: str, answer_list: bool = False) -> str:
    """A scalar as text; RowProblem for bytes that are not UTF-8, text that carried such bytes, and for any
    value of another type (a list, an object, a boolean, NaN), named: a wrong type is never silently turned
    into text. Only an answer-list column (`answer_list`) reduces a list by the majority vote."""
    if value is None:
        return ""
    if isinstance(value, str):
        if has_bad_text(value):
            raise RowProblem(f"non-UTF-8 text in {field_name}")
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise RowProblem(f"non-UTF-8 text in {field_name}") from None
    if isinstance(value, bool):
        raise RowProblem(f"{field_name} is a boolean ({str(value).lower()}), not text")
    if isinstance(value, float) and not math.isfinite(value):
        raise RowProblem(f"{field_name} is not a finite number ({value})")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if answer_list and isinstance(value, (list, tuple)):
        return majority_answer(value)
    raise RowProblem(f"{field_name} is {_type_name(value)}, not text")


def _type_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list" + (" (only answer-list columns such as `answers` are reduced by majority vote)"
                           if value else "")
    return f"a {type(value).__name__}"


def json_safe(value: Any) -> Any:
    """`value` reduced to what JSON can hold (bytes dropped, odd types as strings, text scrubbed)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    if isinstance(value, Mapping):
        if "bytes" in value and isinstance(value.get("bytes"), (bytes, bytearray)):
            return None  # an embedded image struct
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        try:
            return json_safe(value.item())
        except (TypeError, ValueError):
            pass
    return scrub(str(value))


# -------------------------------------------------------------------------------------------- answers


def _answer_strings(values: Any) -> list[str]:
    out: list[str] = []
    for value in values or ():
        if isinstance(value, Mapping):
            value = value.get("answer")
        if value is None:
            continue
        text = _SPACES.sub(" ", as_text(value, "answer")).strip()
        if text:
            out.append(text)
    return out


def majority_answer(values: Any) -> str:
    """The most frequent answer (case-insensitive) of a list of strings or `{answer: ...}` dicts; ties go to
    the alphabetically first, so the result does not depend on annotator order."""
    if isinstance(values, (str, bytes)):
        values = [values]
    elif values is not None and not isinstance(values, (list, tuple)):
        raise RowProblem(f"answer is {_type_name(values)}, not a list of answers")
    answers = _answer_strings(values)
    if not answers:
        return ""
    counts: dict[str, int] = {}
    first_form: dict[str, str] = {}
    for text in answers:
        key = text.casefold()
        counts[key] = counts.get(key, 0) + 1
        first_form.setdefault(key, text)
    best = min(counts, key=lambda k: (-counts[k], k))
    return first_form[best]


def _choice(choices: Any, index: Any) -> str:
    if isinstance(index, str) and index.strip().lstrip("-").isdigit():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int):
        raise RowProblem(f"answer index is not an integer: {index!r}")
    if not isinstance(choices, (list, tuple)) or not 0 <= index < len(choices):
        raise RowProblem(f"answer index {index} out of range for {len(choices or [])} choices")
    return as_text(choices[index], "answer")


def _vqav2_answer(value: Any, row: Mapping[str, Any]) -> str:
    return majority_answer(value) or as_text(row.get("multiple_choice_answer"), "answer")


def _aokvqa_answer(value: Any, row: Mapping[str, Any]) -> str:
    answer = majority_answer(value)
    if not answer and row.get("correct_choice_idx") is not None:
        answer = _choice(row.get("choices"), row.get("correct_choice_idx"))
    return answer


def _scienceqa_answer(value: Any, row: Mapping[str, Any]) -> str:
    return _choice(row.get("choices"), value)


def _list_answer(value: Any, row: Mapping[str, Any]) -> str:
    return majority_answer(value) if isinstance(value, (list, tuple)) else as_text(value, "answer")


# -------------------------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """A known data set's layout: default column mapping, answer reducer and fixed category."""

    name: str
    columns: Mapping[str, str | None]
    answer: Callable[[Any, Mapping[str, Any]], str] | None = None
    category: str | None = None
    category_map: Mapping[str, str] = field(default_factory=dict)
    #: where a separate images table is joined (GQA ships questions and images as separate configs)
    join_on: str | None = None
    verified: str = ""


PRESETS: dict[str, Preset] = {
    "vqav2": Preset(
        "vqav2",
        {
            "image": "image",
            "question": "question",
            "answer": "answers",
            "id": "question_id",
            "category": "answer_type",
        },
        answer=_vqav2_answer,
        category_map={"yes/no": "yes_no", "number": "count"},
        verified="lmms-lab/VQAv2 and HuggingFaceM4/VQAv2 dataset_info features",
    ),
    "gqa": Preset(
        "gqa",
        {"image": "image", "question": "question", "answer": "answer", "id": "id", "category": None},
        join_on="imageId",
        verified="lmms-lab/GQA *_instructions (id, imageId, question, answer, fullAnswer) + *_images (id, image)",
    ),
    "aokvqa": Preset(
        "aokvqa",
        {
            "image": "image",
            "question": "question",
            "answer": "direct_answers",
            "id": "question_id",
            "category": None,
        },
        answer=_aokvqa_answer,
        verified="HuggingFaceM4/A-OKVQA (question_id, question, choices, correct_choice_idx, direct_answers, rationales)",
    ),
    "scienceqa": Preset(
        "scienceqa",
        {"image": "image", "question": "question", "answer": "answer", "id": None, "category": None},
        answer=_scienceqa_answer,
        verified="derek-thomas/ScienceQA and lmms-lab/ScienceQA (image, question, choices, answer:int, hint, subject, ...)",
    ),
    "textvqa": Preset(
        "textvqa",
        {
            "image": "image",
            "question": "question",
            "answer": "answers",
            "id": "question_id",
            "category": None,
        },
        answer=_list_answer,
        category="ocr",
        verified="facebook/textvqa loading script features (image_id, question_id, question, image, answers, ...)",
    ),
    "chartqa": Preset(
        "chartqa",
        {"image": "image", "question": "query", "answer": "label", "id": None, "category": None},
        answer=_list_answer,
        verified="HuggingFaceM4/ChartQA dataset_info (image, query, label: list<string>, human_or_machine)",
    ),
    "clevr": Preset(
        "clevr",
        {
            "image": "image",
            "question": "question",
            "answer": "answer",
            "id": "question_index",
            "category": None,
        },
        verified="HuggingFaceM4/clevr dataset_infos.json (question_index, question_family_index, image_filename, "
        "question, answer, image, image_index, program)",
    ),
}

TABLE_PRESETS = tuple(PRESETS) + ("llava", "llava-onevision")


def known_presets() -> str:
    return ", ".join(TABLE_PRESETS)


# -------------------------------------------------------------------------------------------- images


def image_from_value(value: Any) -> tuple[bytes | None, str | None]:
    """(bytes, path) from an image cell: raw bytes, an HF Image struct `{bytes, path}`, a path or URL string,
    a one-element list of those, or a PIL image. RowProblem for none, several, or an unknown kind."""
    if value is None:
        raise RowProblem("no image")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            raise RowProblem("empty image (0 bytes)")
        return data, None
    if isinstance(value, str):
        if not value.strip():
            raise RowProblem("no image")
        if has_bad_text(value):
            raise RowProblem("image path is not valid UTF-8")
        return None, value.strip()
    if isinstance(value, Mapping):
        data = value.get("bytes")
        path = value.get("path")
        if data:
            return bytes(data), path if isinstance(path, str) and path else None
        if isinstance(path, str) and path.strip():
            return image_from_value(path)
        raise RowProblem("no image")
    if isinstance(value, (list, tuple)):
        if not value:
            raise RowProblem("no image")
        if len(value) > 1:
            raise RowProblem("multi-image row")
        return image_from_value(value[0])
    if hasattr(value, "save") and hasattr(value, "mode"):  # a decoded PIL image
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue(), getattr(value, "filename", None) or None
    raise RowProblem(f"unsupported image value ({type(value).__name__})")


def image_identity(data: bytes | None, path: str | None) -> bytes | str:
    return data if data is not None else (path or "")


# ------------------------------------------------------------------------------------------ tables


class TableMapper:
    """One row → one record, through a column mapping (user `columns` over preset over defaults)."""

    def __init__(
        self,
        *,
        label: str,
        columns: Mapping[str, str] | None = None,
        preset: str | None = None,
        subject_key: str | None = None,
        available: list[str] | None = None,
        list_columns: frozenset[str] = frozenset(),
    ) -> None:
        user = dict(columns or {})
        #: columns the source's schema declares as lists (an Arrow list type): an answer list there is voted on
        self.list_columns = list_columns
        unknown = set(user) - set(ROLES)
        if unknown:
            raise SourceError(f"unknown source.columns role(s) {sorted(unknown)}; roles: {', '.join(ROLES)}")
        if preset is not None and preset not in PRESETS:
            raise SourceError(f"unknown source preset '{preset}'; known presets: {known_presets()}")
        self.preset = PRESETS.get(preset) if preset else None
        self.label = label
        self.subject_key = subject_key
        mapping: dict[str, str | None] = {}
        for role in ROLES:
            if role in user:
                mapping[role] = user[role] or None
            elif self.preset is not None and role in self.preset.columns:
                mapping[role] = self.preset.columns[role]
            elif available is not None:
                mapping[role] = next((c for c in DEFAULT_COLUMNS[role] if c in available), None)
            else:
                mapping[role] = None
        self.mapping = mapping
        self._guess_from_rows = available is None
        self.image_column = mapping["image"]
        # A preset's reducer knows its own answer column only; a user-chosen column is read as plain text.
        preset_answer = self.preset.columns.get("answer") if self.preset else None
        reducer = self.preset.answer if self.preset else None
        self._answer_reducer = reducer if reducer and mapping["answer"] == preset_answer else None

    def check_columns(
        self, available: list[str], where: str, required: tuple[str, ...] = ("image", "question", "answer")
    ) -> None:
        """SourceError when a mapped column is absent or a required role has no column (for tables with a
        fixed schema, and for the first row of schemaless files)."""
        present = dict.fromkeys(available)
        effective = {role: self._column(role, present) for role in ROLES}
        missing = [
            f"{role} → '{column}'"
            for role, column in effective.items()
            if column and column not in present and (role in required or self.mapping[role])
        ]
        unmapped = [role for role in required if not effective[role]]
        if missing or unmapped:
            problems = []
            if missing:
                problems.append("mapped column(s) not found: " + ", ".join(missing))
            if unmapped:
                problems.append("no column found for: " + ", ".join(unmapped))
            raise SourceError(
                f"{where}: " + "; ".join(problems) + f". Available columns: {', '.join(available)}. "
                "Map them with source.columns (e.g. {question: query, answer: label}) or pick a source.preset "
                f"({known_presets()})."
            )

    def _column(self, role: str, row: Mapping[str, Any]) -> str | None:
        column = self.mapping[role]
        if column is None and self._guess_from_rows:
            column = next((c for c in DEFAULT_COLUMNS[role] if c in row), None)
        return column

    def map(self, row: Mapping[str, Any]) -> list[VQARecord]:
        columns = {role: self._column(role, row) for role in ROLES}
        problems: list[str] = []
        image: bytes | None = None
        image_path: str | None = None
        try:
            if columns["image"] is None:
                raise RowProblem("no image")
            image, image_path = image_from_value(row.get(columns["image"]))
        except RowProblem as exc:
            problems.append(exc.detail)
        question = self._text(row, columns["question"], "question", problems)
        answer = self._answer(row, columns["answer"], problems)
        own_id = row.get(columns["id"]) if columns["id"] else None
        own_id = None if own_id is None or (isinstance(own_id, str) and not own_id.strip()) else own_id
        if own_id is not None:
            key = scrub(str(own_id).strip())
        else:
            key = content_key(scrub(question), scrub(answer), image_identity(image, image_path))
        consumed = {columns["image"], columns["question"], columns["id"]}
        answer_value = row.get(columns["answer"]) if columns["answer"] else None
        if not isinstance(answer_value, (list, tuple, Mapping)):
            consumed.add(columns["answer"])
        meta = {k: json_safe(v) for k, v in row.items() if k not in consumed}
        meta = {k: v for k, v in meta.items() if v is not None or row.get(k) is None}
        if self.subject_key and self.subject_key not in meta and self.subject_key in row:
            meta[self.subject_key] = json_safe(row.get(self.subject_key))
        record = VQARecord(
            id=f"{self.label}/{key}",
            source=self.label,
            image=image,
            image_path=image_path,
            question=scrub(question),
            answer=scrub(answer),
            category=self._category(row, columns["category"]),
            meta=meta,
            invalid="; ".join(dict.fromkeys(problems)) or None,
        )
        return [record]

    def _text(self, row: Mapping[str, Any], column: str | None, name: str, problems: list[str]) -> str:
        if column is None:
            problems.append(f"no {name} column")
            return ""
        if column not in row:
            problems.append(f"missing field '{column}'")
            return ""
        try:
            declared = column in ANSWER_LIST_COLUMNS or column in self.list_columns
            return as_text(row[column], name, answer_list=name == "answer" and declared)
        except RowProblem as exc:
            problems.append(exc.detail)
            return ""

    def _answer(self, row: Mapping[str, Any], column: str | None, problems: list[str]) -> str:
        if self._answer_reducer is None:
            return self._text(row, column, "answer", problems)
        if column is None or column not in row:
            problems.append(f"missing field '{column}'")
            return ""
        try:
            return as_text(self._answer_reducer(row[column], row), "answer")
        except RowProblem as exc:
            problems.append(exc.detail)
            return ""

    def _category(self, row: Mapping[str, Any], column: str | None) -> str | None:
        if self.preset is not None and self.preset.category:
            return self.preset.category
        value = row.get(column) if column else None
        if not isinstance(value, str):
            return None
        value = value.strip()
        if self.preset is not None and value in self.preset.category_map:
            return self.preset.category_map[value]
        return value if value in TASK_CATEGORIES else None
