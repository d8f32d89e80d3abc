"""YAML documents from outside the node's control (kubeconfig, runtime mappings).

Parsed with loaders built on PyYAML's safe loader that refuse what makes a
document ambiguous or dangerous: anchors and aliases (a document under 1 KiB
could otherwise expand to gigabytes), a key twice in one mapping (which of
the two wins would be silent), and nesting deeper than the stack. Every
failure is an InputError naming the file, the line and what was expected.
"""

from __future__ import annotations

from collections.abc import Callable
from re import Pattern
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from ..errors import InputError, shown

_NULL_TAG = "tag:yaml.org,2002:null"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"

Resolvers = dict[Any, list[tuple[str, Pattern[str]]]]


def _resolvers(keep: Callable[[str], bool]) -> Resolvers:
    """The safe loader's implicit scalar types, only those ``keep`` accepts."""
    return {first: [(tag, regexp) for tag, regexp in resolvers if keep(tag)]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


class StrictLoader(yaml.SafeLoader):
    """The safe loader without anchors, aliases or duplicate keys, and
    without implicit timestamps: Go's YAML (which kubectl uses) reads a
    date-like scalar into a string field as text, and PyYAML would build a
    date, or fail on ``2018-02-30``."""

    yaml_implicit_resolvers = _resolvers(lambda tag: tag != _TIMESTAMP_TAG)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ComposerError(None, None, "anchors and aliases (& and *) are not allowed", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: the base class says so
                continue
            if seen:
                where = f"line {line}" if first_line[key] == line else f"lines {first_line[key]} and {line}"
                raise ConstructorError(None, None, f"key {shown(key)} appears twice ({where})", key_node.start_mark)
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


class LiteralLoader(StrictLoader):
    """Every plain scalar stays the text it is written as (only an empty
    value is null), as Go's YAML reads scalars into string fields: the
    installers write runtime mappings unquoted (``1.10:``, ``[17.03, 1.12]``)
    and mean the text ``1.10``, never the number 1.1."""

    yaml_implicit_resolvers = _resolvers(lambda tag: tag == _NULL_TAG)


def load_mapping(text: str, origin: str, expected: str, loader: type[StrictLoader] = StrictLoader) -> dict[Any, Any]:
    """The document in ``text``, which must be a mapping."""
    try:
        document = yaml.load(text, Loader=loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{origin}:{mark.line + 1}" if mark is not None else origin
        problem = err.problem or err.context or "malformed"
        raise InputError(f"{where}: not valid YAML ({problem}); expected {expected}") from None
    except yaml.reader.ReaderError as err:
        raise InputError(f"{origin}: not valid YAML (character {_code(err.character)} at offset {err.position} is "
                         f"not allowed); expected {expected}") from None
    except RecursionError:
        raise InputError(f"{origin}: YAML nested too deeply; expected {expected}") from None
    except (ValueError, OverflowError) as err:  # !!int x, !!timestamp 2018-02-30, an int of 5000 digits
        raise InputError(f"{origin}: not valid YAML (a value cannot be built: {shown(str(err))}); "
                         f"expected {expected}") from None
    if not isinstance(document, dict):
        raise InputError(f"{origin}: expected {expected}")
    return document


def _code(character: object) -> str:
    return f"U+{character:04X}" if isinstance(character, int) else shown(character)
