"""interleaf: curate interleaved text-image corpora with Apache Beam, and train a reference model on them."""

__version__ = "0.1.0"
