"""Shared by the bench scripts: each one owns a section of bench/RESULTS.md and rewrites only that section.

A section is delimited by `<!-- begin NAME -->` and `<!-- end NAME -->`; the machine and date are written
with it, so every figure in RESULTS.md says where and when it was measured.
"""

from __future__ import annotations

import fcntl
import os
import platform
import re
from datetime import datetime, timezone

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
HEADER = ("# Benchmark results\n\nEach section is written by the bench script it names; ratios are measured "
          "against a reference in the same run (absolute times vary 30-50% on these shared machines).\n")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; floats get 3 significant digits."""
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def score(x: float | None) -> str:
    """A score in a table: two decimals, or n/a where a group had no prompts."""
    return "n/a" if x is None else f"{x:.2f}"


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) section `name` of bench/RESULTS.md with `body`, stamped with machine and date."""
    stamp = f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}."
    section = f"<!-- begin {name} -->\n## {title}\n\n{stamp}\n\n{body.strip()}\n<!-- end {name} -->"
    with open(RESULTS + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = open(RESULTS).read() if os.path.exists(RESULTS) else HEADER
        pattern = re.compile(rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S)
        text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
        with open(RESULTS, "w") as f:
            f.write(text.rstrip() + "\n")
