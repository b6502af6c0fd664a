"""Prompt templates from `prompts/`: loading, hashing, and rendering with untrusted text kept as data.

Templates use `string.Template` syntax (`$question`, `${answer}`), so JSON examples with braces need no
escaping. Every value from a VQA source is inserted inside a delimited field
(`<vqa_question>…</vqa_question>`) with any delimiter-looking text neutralised, so "ignore previous
instructions" in a question stays data: it can never close the field or reach the system text.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import stat
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError

_TAG_LIKE = re.compile(r"</?\s*(vqa_[a-z_]+|system|assistant|user)\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Prompt:
    name: str
    system: str
    user: str
    sha: str

    @property
    def version(self) -> str:
        return f"{self.name}@{self.sha[:10]}"

    def render(self, **fields: str) -> str:
        """Fill the user template; values go in as delimited, neutralised data fields."""
        safe = {key: data_field(key, value) for key, value in fields.items()}
        try:
            return string.Template(self.user).substitute(safe)
        except KeyError as exc:
            raise ConfigError(f"prompt {self.name} uses ${exc.args[0]} which the stage does not provide") from None


def neutralise(text: str) -> str:
    """Break anything that looks like one of our field delimiters or a chat role tag."""
    return _TAG_LIKE.sub(lambda m: m.group(0).replace("<", "‹").replace(">", "›"), text)


def data_field(name: str, value: str | None) -> str:
    return f"<vqa_{name}>{neutralise(value or '')}</vqa_{name}>"


SYSTEM_MARKER = "\n=== USER ===\n"


def _modified(path: Path) -> float | None:
    """The file's mtime, None when it is not a file: one stat, where resolve() + is_file() + stat() took a dozen
    system calls per call (the stages load their prompt for every record)."""
    try:
        info = path.stat()
    except (OSError, ValueError):
        return None
    return info.st_mtime if stat.S_ISREG(info.st_mode) else None


def load_prompt(prompts_dir: Path, relative: str) -> Prompt:
    """Load `prompts/<relative>`; the text before a line `=== USER ===` is the system prompt."""
    path = prompts_dir / relative
    mtime = _existing(path, "prompt template", "set prompts_dir or fix the stage's `prompt`")
    return _parse_prompt(path, mtime, relative)


def _existing(path: Path, what: str, hint: str) -> float:
    """The file's mtime (what a parsed copy is cached by); a ConfigError saying `hint` when it is missing."""
    mtime = _modified(path)
    if mtime is None:
        raise ConfigError(f"{what} not found: {path.resolve()} ({hint})")
    return mtime


@lru_cache(maxsize=256)
def _parse_prompt(path: Path, mtime: float, relative: str) -> Prompt:
    """A template parsed once per file version (`mtime` is part of the cache key)."""
    text = path.read_text(encoding="utf-8")
    if SYSTEM_MARKER in text:
        system, user = text.split(SYSTEM_MARKER, 1)
    else:
        system, user = "", text
    sha = hashlib.sha256(text.encode()).hexdigest()
    return Prompt(name=relative, system=system.strip(), user=user.strip() + "\n", sha=sha)


def prompt_hashes(prompts_dir: Path, relatives: list[str]) -> dict[str, str]:
    return {rel: load_prompt(prompts_dir, rel).sha for rel in sorted(set(relatives))}


# -- exemplar pools -----------------------------------------------------------------------------------------
EXAMPLES_HEADER = (
    "Worked examples for this record, drawn from this category's pool (they show how the answer decides the "
    "edit; write your own wording, never copy their sentences or their closing):"
)


@dataclass(frozen=True)
class ExamplePool:
    """`prompts/<examples template>`: one worked example a JSONL line (question, answer, plan, instruction)."""

    name: str
    examples: tuple[dict, ...]
    sha: str

    def draw(self, seed: int, record_id: str, k: int) -> list[dict]:
        """`k` distinct examples for a record, seeded by (pipeline seed, record id): the same on every run."""
        rng = random.Random(f"uniedit-examples/{seed}/{record_id}")
        return [self.examples[i] for i in sorted(rng.sample(range(len(self.examples)), min(k, len(self.examples))))]


def format_example(example: dict) -> str:
    return (f"question: {example['question']}  answer: {example['answer']}\n"
            f"plan: {example['plan']}\n"
            f"instruction: {example['instruction']}")


def load_examples(prompts_dir: Path, relative: str) -> ExamplePool:
    """The pool `prompts/<relative>`; a line that is not an object with question, answer, plan and instruction
    is a ConfigError naming the file and line."""
    path = prompts_dir / relative
    mtime = _existing(path, "exemplar pool", "set stages.rewrite.examples, or null for none")
    return _parse_examples(path, mtime, relative)


@lru_cache(maxsize=64)
def _parse_examples(path: Path, mtime: float, relative: str) -> ExamplePool:
    """A pool parsed once per file version (the rewrite stage asks for it for every record)."""
    text = path.read_text(encoding="utf-8")
    examples = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except ValueError:
            example = None
        if not isinstance(example, dict) or not all(
            isinstance(example.get(k), str) and example[k] for k in ("question", "answer", "plan", "instruction")
        ):
            raise ConfigError(f"{path.resolve()}:{number}: an example is a JSON object with question, answer, plan and "
                              "instruction (non-empty strings)")
        examples.append(example)
    if not examples:
        raise ConfigError(f"exemplar pool {path} is empty")
    return ExamplePool(relative, tuple(examples), hashlib.sha256(text.encode()).hexdigest())


def with_examples(prompt: Prompt, pool: ExamplePool) -> Prompt:
    """`prompt` with an `$examples` field after its user text; its version names the pool too, so a changed pool
    is a new prompt version (the cache keys change with the rendered text in any case)."""
    sha = hashlib.sha256(f"{prompt.sha}+{pool.sha}".encode()).hexdigest()
    return Prompt(prompt.name, prompt.system, f"{prompt.user}\n{EXAMPLES_HEADER}\n$examples\n", sha)
