"""YAML documents from outside the node's control (kubeconfig, runtime mappings).

Parsed with loaders built on PyYAML's safe loader that refuse what makes a
document ambiguous or dangerous: anchors and aliases (a document under 1 KiB
could otherwise expand to gigabytes), a key twice in one mapping (which of
the two wins would be silent), and nesting deeper than the stack. Every
failure is an InputError naming the file, the line and what was expected.

A document of 1 MiB (a ConfigMap may be larger) takes PyYAML's pure-Python
scanner seconds; where PyYAML has libyaml, its C parser reads the text and
only composing and constructing (where the checks are) run in Python.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from re import Pattern
from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

from ..errors import InputError, shown

_NULL_TAG = "tag:yaml.org,2002:null"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"

Resolvers = dict[Any, list[tuple[str, Pattern[str]]]]


def _resolvers(keep: Callable[[str], bool]) -> Resolvers:
    """The safe loader's implicit scalar types, only those ``keep`` accepts."""
    return {first: [(tag, regexp) for tag, regexp in resolvers if keep(tag)]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


if yaml.__with_libyaml__:
    from yaml._yaml import CParser as _Events
else:  # a PyYAML built without libyaml: its own reader, scanner and parser
    class _Events(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)  # type: ignore[no-untyped-call]
            yaml.scanner.Scanner.__init__(self)  # type: ignore[no-untyped-call]
            yaml.parser.Parser.__init__(self)  # type: ignore[no-untyped-call]


class StrictLoader(Composer, _Events, SafeConstructor, Resolver):
    """The safe loader without anchors, aliases or duplicate keys, and
    without implicit timestamps: Go's YAML (which kubectl uses) reads a
    date-like scalar into a string field as text, and PyYAML would build a
    date, or fail on ``2018-02-30``. Its events come from ``_Events``; the
    Python composer comes first, so that nodes (and the checks below) are
    made here and not in C."""

    yaml_implicit_resolvers = _resolvers(lambda tag: tag != _TIMESTAMP_TAG)

    def __init__(self, stream: str) -> None:
        _Events.__init__(self, stream)
        Composer.__init__(self)  # type: ignore[no-untyped-call]
        SafeConstructor.__init__(self)  # type: ignore[no-untyped-call]
        Resolver.__init__(self)  # type: ignore[no-untyped-call]

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:  # an alias's anchor is its target
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
        with _no_cycle_collection():
            document = _load(loader(text))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{origin}:{mark.line + 1}" if mark is not None else origin
        # libyaml says "did not find expected ','" where PyYAML says "expected ','":
        # one wording, whichever parser this PyYAML has
        problem = (err.problem or err.context or "malformed").replace("did not find expected", "expected", 1)
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


def _load(loader: StrictLoader) -> Any:
    """What ``yaml.load`` does, typed for a loader of this module."""
    try:
        return loader.get_single_data()  # type: ignore[no-untyped-call]
    finally:
        loader.dispose()


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """The cyclic garbage collector paused while a document is loaded. With
    anchors and aliases refused, loading makes no cycles, yet every pass of
    the collector walks the whole growing tree of nodes: at 1 MiB those
    passes cost more than the parse itself, and grow faster than the text."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _code(character: object) -> str:
    return f"U+{character:04X}" if isinstance(character, int) else shown(character)
