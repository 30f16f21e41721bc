"""The design card's root folders must never shadow a dependency (Hugging Face `tokenizers` above all)."""

import os
import subprocess
import sys

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHECK = ("import tokenizers, interleaf.tokenizers.layout as l; "
         "from tokenizers import Tokenizer; "
         "print(tokenizers.__file__); print(l.__file__)")


def _run(cwd) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_hf_tokenizers_wins_from_the_repository_root():
    hf, ours = _run(REPO)
    assert "site-packages" in hf and hf.endswith("tokenizers/__init__.py")
    assert ours.endswith("layout.py")


def test_hf_tokenizers_wins_in_an_installed_environment(tmp_path):
    hf, ours = _run(tmp_path)
    assert "site-packages" in hf


def test_root_folders_are_not_importable_as_top_level_regular_packages():
    # A root folder with __init__.py would become a regular top-level package from the repository root.
    for folder in ("pipelines", "tokenizers", "filters", "schemas", "model"):
        assert not (REPO / folder / "__init__.py").exists(), folder


def test_console_script_lists_commands():
    script = os.path.join(os.path.dirname(sys.executable), "interleaf")
    out = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "inspect" in out


LIGHT_CLI = """
import sys
from interleaf.cli import build_parser, main
build_parser()
assert main(["inspect", sys.argv[1]]) == 0
heavy = sorted(m for m in ("apache_beam", "torch", "open_clip", "img2dataset") if m in sys.modules)
print("heavy:", ",".join(heavy))
"""


def test_the_command_line_starts_without_beam_or_torch(tmp_path):
    """issue 15: `interleaf --help` and `interleaf inspect SHARD` import neither Beam nor torch (seconds of
    CPU each): the stages, input formats and model presets they list live in modules of their own."""
    from interleaf.schemas.document import Document, Node, documents_to_table
    from interleaf.shards import write_shards

    doc = Document(doc_id="d" * 32, url="http://example.com/", nodes=[Node.text_node("some words here")])
    write_shards(str(tmp_path / "documents"), [documents_to_table([doc])])
    out = subprocess.run([sys.executable, "-c", LIGHT_CLI, str(tmp_path / "documents")], capture_output=True,
                         text=True, check=True).stdout
    assert "documents shards: 1, rows: 1" in out and out.strip().endswith("heavy:"), out
