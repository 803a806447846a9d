"""What commands print: JSON on stdout."""

from __future__ import annotations

import json
from typing import Any


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON."""
    print(json.dumps(value, indent=2))
