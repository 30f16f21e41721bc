"""Names the command line needs before any engine is imported (importing Beam costs seconds): the stages
users name, in pipeline order (the input formats are interleaf.readers.formats()). Nothing here imports
Beam or torch."""

STAGES = ("ingest", "dedup", "fetch", "clip", "tokenize")
MANIFEST = "manifest.json"  # the run's manifest, in the run directory
