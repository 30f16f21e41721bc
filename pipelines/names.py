"""Names the command line needs before any engine is imported (importing Beam costs seconds): the stages
users name, in pipeline order, and the input formats ingest reads. Nothing here imports Beam or torch."""

STAGES = ("ingest", "dedup", "fetch", "clip", "tokenize")
FORMATS = ("warc", "obelics", "mmc4")  # ingest's input formats (pipelines/ingest.py detect_format)
MANIFEST = "manifest.json"  # the run's manifest, in the run directory
