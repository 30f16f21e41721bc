"""The image rules (format, sides, aspect, area) as pure functions: decided on the header, never by decoding."""

import importlib.util
import io
import resource
from pathlib import Path

import pytest
from PIL import Image

from interleaf.filters.image_rules import ImageRules, header_size, refusal, size_refusal, sniff_format
from interleaf.imagefile import ImageDecodeError

_spec = importlib.util.spec_from_file_location(
    "fetch_servers", Path(__file__).resolve().parent.parent / "download" / "test_fetch_servers.py")
servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(servers)


def encoded(size, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, fmt)
    return out.getvalue()


def test_sniff_format_reads_magic_bytes_only():
    assert sniff_format(servers.jpeg((200, 200))) == "jpeg"
    assert sniff_format(servers.png((200, 200))) == "png"
    assert sniff_format(b"GIF89a....") == "gif"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff_format(b"<!doctype html>") is None and sniff_format(b"") is None
    assert sniff_format(encoded((200, 200), "BMP")) is None  # Pillow reads BMP; the store does not take it


def test_header_size_reads_without_decoding():
    assert header_size(servers.png_bomb(300), "png") == (300, 300)
    with pytest.raises(ImageDecodeError) as e:
        header_size(servers.png_bomb(20000), "png")
    assert e.value.bomb
    with pytest.raises(ImageDecodeError) as e:
        header_size(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "png")
    assert not e.value.bomb


@pytest.mark.parametrize("size,reason", [
    ((150, 150), None), ((149, 300), "too_small"), ((300, 601), "bad_aspect"), ((300, 600), None),
    ((601, 300), "bad_aspect"), ((20001, 15000), "too_large"), ((15000, 15000), "too_large")])
def test_obelics_size_rules(size, reason):
    refused = size_refusal(*size, ImageRules())
    assert (refused[0] if refused else None) == reason


@pytest.mark.parametrize("data,reason", [
    (encoded((300, 200), "JPEG"), None),
    (encoded((300, 200), "PNG"), None),
    (encoded((300, 200), "GIF"), None),
    (encoded((300, 200), "WEBP"), None),
    (encoded((300, 200), "BMP"), "not_image"),
    (encoded((300, 200), "TIFF"), "not_image"),
    (encoded((100, 100), "PNG"), "too_small"),
    (encoded((900, 300), "JPEG"), "bad_aspect"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not_image"),  # PNG magic, no readable header
    (b"\xff\xd8\xff" + b"\x00" * 10, "not_image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not_image"),
])
def test_refusal_of_bytes(data, reason):
    refused = refusal(data, ImageRules())
    assert (refused[0] if refused else None) == reason
    if refused:
        assert refused[1]  # a message says which rule and what was found


def test_a_bomb_is_refused_from_its_header_without_decoding():
    bomb = servers.png_bomb(10000)  # 100 Mpx declared: above max_pixels, below Pillow's own refusal
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert refusal(bomb, ImageRules())[0] == "too_large"
    assert refusal(servers.png_bomb(20000), ImageRules())[0] == "too_large"  # Pillow's bomb error, counted
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing decoded


def test_original_size_is_judged_when_given():
    small = encoded((32, 32), "JPEG")  # resized bytes of an image that was 300 x 200 as served
    assert refusal(small, ImageRules(), size=(300, 200)) is None
    assert refusal(small, ImageRules())[0] == "too_small"


def test_rules_are_validated():
    with pytest.raises(ValueError, match="min_side"):
        ImageRules(min_side=500, max_side=100).validate()
    with pytest.raises(ValueError, match="max_aspect_ratio"):
        ImageRules(max_aspect_ratio=0.5).validate()
    with pytest.raises(ValueError, match="allowed_formats"):
        ImageRules(allowed_formats=("jpeg", "bmp")).validate()
