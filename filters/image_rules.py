"""The image rules: which images a corpus keeps, by format, sides, aspect ratio and area. One rule for every
image, fetched or archived in a WARC or taken from an earlier run's store: the fetcher consults it before
decoding (a refused URL costs no decode and no store space), and the image-rules step of a run
(pipelines/image_rules.py) applies it to every image once fetched and archived images have met.

Decided on the header alone (magic bytes and the size Pillow reads without decoding), so a decompression
bomb is refused before anything is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from interleaf.imagefile import ImageDecodeError, read_header

# reason codes (the fetcher's statuses of the same names in schemas.image.FETCH_STATUSES)
NOT_IMAGE = "not_image"  # no allowed image format in the bytes' magic numbers, or an unreadable header
TOO_LARGE = "too_large"
TOO_SMALL = "too_small"
BAD_ASPECT = "bad_aspect"
SIZE_REASONS = (TOO_SMALL, BAD_ASPECT, TOO_LARGE)

# Magic bytes of the formats the store accepts (what img2dataset's Resizer, OpenCV, decodes).
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)
PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP"}


@dataclass(frozen=True, kw_only=True)
class ImageRules:
    """Which images are kept. Defaults and their sources are in the comments."""

    allowed_formats: tuple[str, ...] = ("jpeg", "png", "gif", "webp")  # what OpenCV decodes and we store
    min_side: int = 150  # px; OBELICS (Laurençon et al. 2023, sec. 3.5): sides below 150 px removed
    max_side: int = 20_000  # px; OBELICS: sides above 20,000 px removed
    max_aspect_ratio: float = 2.0  # OBELICS: aspect ratio above 2 (or below 1/2) removed
    max_pixels: int = Image.MAX_IMAGE_PIXELS  # header-declared area above this is never decoded: Pillow's
    # decompression-bomb threshold (89,478,485 px, about 256 MiB as 24-bit RGB)

    def validate(self) -> None:
        problems = []
        if self.min_side < 1 or self.max_side < self.min_side:
            problems.append(f"need 1 <= min_side <= max_side, found {self.min_side} and {self.max_side}")
        if self.max_aspect_ratio < 1:
            problems.append(f"max_aspect_ratio must be at least 1, found {self.max_aspect_ratio}")
        if self.max_pixels <= 0:
            problems.append(f"max_pixels must be positive, found {self.max_pixels}")
        if not self.allowed_formats:
            problems.append("allowed_formats is empty: every image would be refused")
        unknown = set(self.allowed_formats) - set(PIL_FORMATS)
        if unknown:
            problems.append(f"allowed_formats: unknown {sorted(unknown)}; known: {sorted(PIL_FORMATS)}")
        if problems:
            raise ValueError("invalid image rules: " + "; ".join(problems))


def sniff_format(data: bytes) -> str | None:
    """The image format the bytes start with (magic numbers), whatever a Content-Type or file name said."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def format_refusal(fmt: str | None, rules: ImageRules) -> str | None:
    """Why an image of this (sniffed) format is refused, or None."""
    if fmt is None or fmt not in rules.allowed_formats:
        return f"not an allowed image format ({', '.join(rules.allowed_formats)}): {fmt or 'unknown'}"
    return None


def header_size(data: bytes, fmt: str) -> tuple[int, int]:
    """(width, height) declared in the header of bytes sniffed as `fmt`; nothing is decoded. Raises
    ImageDecodeError (its `bomb` flag set when Pillow's own limit, twice ours, refused the header)."""
    width, height, _ = read_header(data, formats=[PIL_FORMATS[fmt]])
    return width, height


def size_refusal(width: int, height: int, rules: ImageRules) -> tuple[str, str] | None:
    """(reason, message) for the size rule that (width, height) breaks, or None."""
    if width * height > rules.max_pixels or max(width, height) > rules.max_side:
        return TOO_LARGE, (f"{width}x{height} is above the limits ({rules.max_side} px a side, "
                           f"{rules.max_pixels} px in all); not decoded")
    if min(width, height) < rules.min_side:
        return TOO_SMALL, f"{width}x{height}: a side is below {rules.min_side} px"
    if max(width, height) / min(width, height) > rules.max_aspect_ratio:
        return BAD_ASPECT, f"{width}x{height}: aspect ratio above {rules.max_aspect_ratio}"
    return None


@dataclass(frozen=True)
class HeaderVerdict:
    """What the header of image bytes says against the rules: the format sniffed, the size read (None when
    it could not be), and the rule broken (reason, message) or None."""

    fmt: str | None
    size: tuple[int, int] | None
    reason: str | None = None  # NOT_IMAGE, UNREADABLE, or one of SIZE_REASONS
    message: str | None = None


UNREADABLE = "unreadable"  # an allowed format by its magic bytes, whose header cannot be read


def judge_header(data: bytes, rules: ImageRules, size: tuple[int, int] | None = None) -> HeaderVerdict:
    """The format by magic bytes, then the sides, aspect and area of `size` (the original size, when the
    bytes were resized) or else of the header. The one sequence both the fetcher (before decoding) and the
    image-rules step (on every stored image) apply."""
    fmt = sniff_format(data)
    problem = format_refusal(fmt, rules)
    if problem is not None:
        return HeaderVerdict(fmt, None, NOT_IMAGE, problem)
    if size is None:
        try:
            size = header_size(data, fmt)
        except ImageDecodeError as e:
            if e.bomb:
                return HeaderVerdict(fmt, None, TOO_LARGE, f"header declares a decompression bomb: {e}")
            return HeaderVerdict(fmt, None, UNREADABLE, f"{fmt} header unreadable: {e}")
    refused = size_refusal(size[0], size[1], rules)
    return HeaderVerdict(fmt, size, *(refused or (None, None)))


def refusal(data: bytes, rules: ImageRules, size: tuple[int, int] | None = None) -> tuple[str, str] | None:
    """(reason, message) for the rule that these image bytes break, or None (judge_header; an unreadable
    header is NOT_IMAGE here)."""
    verdict = judge_header(data, rules, size)
    if verdict.reason is None:
        return None
    return (NOT_IMAGE if verdict.reason == UNREADABLE else verdict.reason), verdict.message
