"""Running on Google Cloud Dataflow: the options a job needs, checked before any work starts, and how the
workers get interleaf.

The same pipeline runs remotely: only Beam's options change. Workers install interleaf from the sdist Beam
builds out of this checkout's pyproject.toml (`--setup_file`), unless the user stages it another way
(`--extra_package`, `--requirements_file` or a custom `--sdk_container_image`). Steps that need a GPU (CLIP,
the VQ encoder) carry Beam resource hints so that Dataflow gives them accelerator workers.
"""

from __future__ import annotations

import os
from pathlib import Path

from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions, SetupOptions,
                                                  StandardOptions, TestOptions, WorkerOptions)

REMOTE_RUNNERS = ("DataflowRunner",)
STAGING_FLAGS = ("--setup_file", "--extra_package", "--extra_packages", "--requirements_file",
                 "--sdk_container_image")


def is_remote(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in REMOTE_RUNNERS


def is_dry_run(options: PipelineOptions) -> bool:
    """Beam's --dry_run: the runner translates the pipeline into a job and stops before submitting it."""
    return bool(options.view_as(TestOptions).dry_run)


def source_root() -> Path | None:
    """The checkout interleaf runs from (the folder with its pyproject.toml), or None when installed from
    a wheel. Follows the symlinks of a strict editable install."""
    here = Path(os.path.realpath(__file__)).parent  # pipelines/
    for candidate in (here.parent, here.parent.parent):
        if (candidate / "pyproject.toml").is_file() and (candidate / "src" / "interleaf").is_dir():
            return candidate
    return None


def prepare(pipeline_args: list[str]) -> list[str]:
    """Check a remote run's options and add how the workers install interleaf; local runs pass through.
    Raises ValueError naming every missing option."""
    options = PipelineOptions(pipeline_args)
    if not is_remote(options):
        return list(pipeline_args)
    gcp = options.view_as(GoogleCloudOptions)
    missing = [flag for flag, value in (("--project", gcp.project), ("--region", gcp.region),
                                        ("--temp_location", gcp.temp_location)) if not value]
    if missing:
        raise ValueError(f"DataflowRunner needs {', '.join(missing)} (for example --project my-project "
                         "--region us-central1 --temp_location gs://my-bucket/tmp)")
    for name in ("temp_location", "staging_location"):
        value = getattr(gcp, name)
        if value and not value.startswith("gs://"):
            raise ValueError(f"--{name} must be a gs:// path for DataflowRunner, found {value}")
    args = list(pipeline_args)
    if not any(a.split("=", 1)[0] in STAGING_FLAGS for a in args):
        root = source_root()
        if root is None:
            raise ValueError("cannot tell how Dataflow workers should install interleaf: pass --setup_file, "
                             "--extra_package (a wheel of interleaf) or --sdk_container_image")
        args += ["--setup_file", str(root / "pyproject.toml")]
    return args


def describe(options: PipelineOptions) -> dict:
    """What a remote run will ask for, for the manifest and the dry run's report."""
    setup = options.view_as(SetupOptions)
    worker = options.view_as(WorkerOptions)
    return {"runner": options.view_as(StandardOptions).runner,
            "project": options.view_as(GoogleCloudOptions).project,
            "region": options.view_as(GoogleCloudOptions).region,
            "setup_file": setup.setup_file, "extra_packages": setup.extra_packages,
            "sdk_container_image": worker.sdk_container_image, "machine_type": worker.machine_type,
            "max_num_workers": worker.max_num_workers}


def job_graph(result) -> dict:
    """The translated job of a dry run: the transforms by name and the resource hints they carry."""
    proto = result.job.proto_pipeline
    envs = proto.components.environments
    transforms, hints = [], {}
    for t in proto.components.transforms.values():
        transforms.append(t.unique_name)
        if t.environment_id and envs[t.environment_id].resource_hints:
            hints[t.unique_name] = {k: v.decode() for k, v in envs[t.environment_id].resource_hints.items()}
    return {"transforms": sorted(transforms), "resource_hints": hints}
