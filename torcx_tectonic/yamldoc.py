"""YAML documents from outside the node's control (kubeconfig, runtime mappings).

Parsed with PyYAML's safe loader only; a parse error or a document that is
not a mapping is an InputError naming the file and what was expected.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import InputError


def load_mapping(text: str, origin: str, expected: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(f"{origin}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(document, dict):
        raise InputError(f"{origin}: expected {expected}")
    return document
