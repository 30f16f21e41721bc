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
