"""What the deduplication stages share: the funnel stage name, the reason codes that documents and image
records share, and the check of their configurations."""

from __future__ import annotations

import typing

STAGE = "dedup"
# Main outputs of multi-output steps are (key, value) pairs; Beam's inference would see the TaggedOutputs.
_KV = tuple[typing.Any, typing.Any]

# reason codes of both documents and image records
EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"


def _check_positive(where: str, **values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{where}.{name} must be at least 1, found {value}")
