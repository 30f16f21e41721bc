"""The run directory's safety: one run at a time, never an input deleted, and a manifest that says whether
the run finished.

- `check_overlap`: an input (a file, a shard directory, the image store beside shards) inside one of the
  output's directories that a run rewrites is refused, on resolved paths (symlinks, "..", another spelling).
- `RunLock`: DIR/.interleaf.lock, created exclusively, names the process that holds the output. A second run
  into it is refused while that process lives; a lock left by a process that is gone (killed) is taken
  over. Local outputs only: object stores have no exclusive create (a remote output's manifest still says
  "running" until the run ends).
- the manifest is written with status "running" before anything in the output changes and rewritten with
  "complete" (or "failed", with the error) at the end, so a killed run's directory says so; `interleaf
  inspect` and `interleaf report` read it (`run_status`).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from datetime import datetime, timezone

from interleaf import storage
from interleaf.pipelines.names import MANIFEST

LOCK = ".interleaf.lock"
RUNNING, COMPLETE, FAILED = "running", "complete", "failed"


def _resolved(path: str) -> str | None:
    return os.path.realpath(path) if storage.is_local(path) else None


def check_overlap(inputs: list[str], output: str, rewritten: tuple[str, ...]) -> None:
    """Raise ValueError when an input lies inside a directory of `output` that the run rewrites."""
    out = _resolved(output)
    for path in inputs:
        if out is None:
            spelled = [storage.join(output, sub).rstrip("/") for sub in rewritten]
            if any(path.rstrip("/") == s or path.startswith(s + "/") for s in spelled):
                raise ValueError(f"input {path} is inside the output directory {output}, which this run "
                                 "rewrites; write to another --output")
            continue
        real = _resolved(path)
        if real is None:
            continue
        for sub in rewritten:
            target = os.path.join(out, sub)
            if real == target or real.startswith(target + os.sep) or target.startswith(real + os.sep):
                raise ValueError(f"input {path} is inside {storage.join(output, sub)}, which this run "
                                 "rewrites; write to another --output")


def _active(holder: dict, host: str) -> bool:
    """Whether the run that wrote a lock may still hold it: on this host, its process lives; on another
    host nothing can be known, so it is taken to."""
    if "pid" not in holder:
        return not holder.get("stale", False)
    if holder.get("host") != host:
        return True
    try:
        return _alive(int(holder["pid"]))
    except (TypeError, ValueError):
        return False


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """DIR/.interleaf.lock for the length of a run (a context manager); see the module docstring."""

    def __init__(self, output: str):
        self.output = output
        local = storage.local_path(output)
        self.path = os.path.join(local, LOCK) if local is not None else None
        self.held = False

    def __enter__(self) -> RunLock:
        if self.path is None:
            return self
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # released meanwhile
                    continue
                if _active(holder, me["host"]):
                    who = f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
                    raise ValueError(f"output {self.output} is in use by another run ({who}); wait for it, "
                                     f"or remove {self.path} if that run is gone") from None
                try:  # the holder is gone: its lock is stale
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise ValueError(f"cannot take the lock {self.path}: another run keeps taking it")

    def _holder(self) -> dict | None:
        try:
            with open(self.path) as f:
                holder = json.load(f)
            return holder if isinstance(holder, dict) else {"stale": True}
        except FileNotFoundError:
            return None
        except (ValueError, OSError):  # half-written: by a process killed while writing it, or writing now
            try:
                return {"stale": time.time() - os.path.getmtime(self.path) > 60}
            except FileNotFoundError:
                return None

    def __exit__(self, *exc) -> None:
        if self.held:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.held = False


def write_manifest(output: str, manifest: dict) -> None:
    storage.write_bytes(storage.join(output, MANIFEST),
                        json.dumps(manifest, indent=2, default=str, sort_keys=False).encode())


def run_pipeline(pipeline, output: str, manifest: dict):
    """Run a Beam pipeline to its end; if it fails, the manifest in `output` says "failed", with the error's
    first line, before the error goes on."""
    try:
        result = pipeline.run()
        result.wait_until_finish()
        return result
    except BaseException as e:
        error = (str(e).strip().splitlines() or [type(e).__name__])[0][:500]
        write_manifest(output, {**manifest, "status": FAILED, "error": error})
        raise


def run_status(directory: str) -> dict | None:
    """{"status", "started", "error"} of the run that wrote `directory` (a run directory, or a shard
    directory inside one), from its manifest; None when there is no manifest. A manifest without a status
    (older versions wrote one only at the end) is a complete run."""
    for candidate in (directory, os.path.dirname(directory.rstrip("/"))):
        path = storage.join(candidate, MANIFEST)
        if candidate and storage.exists(path):
            try:
                manifest = json.loads(storage.read_bytes(path))
            except ValueError:
                return {"status": FAILED, "error": f"{path} is not valid JSON"}
            if not isinstance(manifest, dict):
                return {"status": FAILED, "error": f"{path} is not a JSON object"}
            return {"status": manifest.get("status", COMPLETE), "started": manifest.get("started"),
                    "error": manifest.get("error"), "manifest": path}
    return None


# ---------------------------------------------------------------- a manifest read back

_MANIFEST_TYPES = {"stages": list, "inputs": dict, "versions": dict, "config": dict, "timings_s": dict,
                   "funnel": dict, "created": str, "started": str, "status": str, "error": str,
                   "unreconciled": list}


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _seconds(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value < 1e12)


def sane_funnel(funnel) -> dict:
    """The funnel without what is not {stage: {unit: {"in": n, "out": n, "dropped": {reason: n}, "info":
    {name: n}}}} with counts that are whole numbers from 0 to 2**63 (a hand-edited or foreign manifest)."""
    if not isinstance(funnel, dict):
        return {}
    out = {}
    for stage, units in funnel.items():
        if not isinstance(units, dict):
            continue
        kept = {}
        for unit, entry in units.items():
            if not isinstance(entry, dict) or not all(_count(entry.get(k, 0)) for k in ("in", "out")):
                continue
            entry = dict(entry)
            for key in ("dropped", "info"):
                if key in entry:
                    value = entry[key]
                    entry[key] = ({str(k): v for k, v in value.items() if _count(v)}
                                  if isinstance(value, dict) else {})
            kept[unit] = entry
        out[stage] = kept
    return out


def sane_manifest(manifest: dict) -> dict:
    """The manifest without the values that are not of the type interleaf writes (a hand-edited or foreign
    manifest), so that what reads it (report, export's card) uses what it can and never fails on a type."""
    out = {k: v for k, v in manifest.items() if k not in _MANIFEST_TYPES or isinstance(v, _MANIFEST_TYPES[k])}
    if "stages" in out:
        out["stages"] = [s for s in out["stages"] if isinstance(s, str)]
    if "inputs" in out:
        out["inputs"] = {str(k): [p for p in v if isinstance(p, str)] for k, v in out["inputs"].items()
                         if isinstance(v, list)}
    if "unreconciled" in out:
        out["unreconciled"] = [u for u in out["unreconciled"] if isinstance(u, str)]
    if "timings_s" in out:
        timings = {k: v for k, v in out["timings_s"].items() if k == "processing_by_stage" or _seconds(v)}
        by_stage = timings.get("processing_by_stage")
        if by_stage is not None:
            timings["processing_by_stage"] = ({str(k): v for k, v in by_stage.items() if _seconds(v)}
                                              if isinstance(by_stage, dict) else {})
        out["timings_s"] = timings
    if "funnel" in out:
        out["funnel"] = sane_funnel(out["funnel"])
    return out

