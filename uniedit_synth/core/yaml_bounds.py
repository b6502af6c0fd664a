"""Bounded YAML loading: a text's size is checked before it is parsed, its alias expansion before anything
is built from it, and every failure is a one-line ConfigError naming the real cause."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, UnsafeYAML

#: a pipeline is a few KB; a YAML text this large is refused before it is parsed (PyYAML takes seconds per MB
#: and builds hundreds of bytes of objects per byte of text)
MAX_YAML_BYTES = 1_000_000


def yaml_size_problem(size: int, origin: str) -> str | None:
    if size > MAX_YAML_BYTES:
        return (f"{origin}: refused, it is {size / 1e6:.1f} MB and a pipeline is a few KB (the limit is "
                f"{MAX_YAML_BYTES / 1e6:g} MB); keep data out of the pipeline file")
    return None


#: a pipeline is a few hundred YAML nodes; anchors and aliases may repeat parts, but expanded it must stay small
#: (a "billion laughs" alias bomb of 1.4 KB expands to billions of nodes when validated or hashed)
MAX_YAML_NODES = 100_000


def load_yaml_text(text: str, origin: str) -> Any:
    """`yaml.safe_load` with the alias expansion bounded: the document's node graph is composed (aliases are
    shared nodes there, so this is cheap), its size with every alias expanded is counted, and a document over
    MAX_YAML_NODES is refused before anything is built from it. Errors are one-line ConfigErrors."""
    too_big = yaml_size_problem(len(text), origin)
    if too_big:
        raise UnsafeYAML(too_big)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_NODES:
            written = _node_count(node)
            raise UnsafeYAML(
                f"{origin}: refused, it has {written} YAML nodes, more than the {MAX_YAML_NODES} a pipeline may "
                "have; keep data out of the pipeline file" if written > MAX_YAML_NODES else
                f"{origin}: refused, its anchors and aliases expand to more than {MAX_YAML_NODES} YAML nodes "
                "(an alias bomb?); write the values out instead"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{origin}: not valid YAML at{where}: {problem}") from None
    except RecursionError:
        raise UnsafeYAML(f"{origin}: refused, nested too deeply") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = MAX_YAML_NODES + 1  # a node that (through an alias) contains itself is refused too
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, memo) for item in node.value)
    else:
        size = 1
    memo[id(node)] = size = min(size, MAX_YAML_NODES + 1)
    return size


def _node_count(root: yaml.Node) -> int:
    """The nodes of a composed document as written (an alias counted once), without recursion."""
    seen: set[int] = set()
    stack = [root]
    while stack and len(seen) <= MAX_YAML_NODES:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return len(seen)


def read_yaml_file(path: Path, what: str) -> Any:
    """A YAML file's document: a regular file, at most MAX_YAML_BYTES (checked before it is read), UTF-8."""
    try:
        if not path.is_file():  # a FIFO or a device would block the read, or never end
            raise ConfigError(f"{what} {path} is not a regular file; give a YAML file")
        too_big = yaml_size_problem(path.stat().st_size, str(path))
        if too_big:
            raise UnsafeYAML(too_big)  # before reading it: parsing 10 MB of YAML takes a minute and GBs
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    return load_yaml_text(text, str(path))
