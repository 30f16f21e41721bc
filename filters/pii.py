"""Personal data in text: e-mail addresses, phone numbers, IP addresses and social-media handles, each
replaced by a typed placeholder and counted by kind.

Placeholders are Dolma's (Soldaini et al. 2024, "Dolma", section on PII: `|||EMAIL_ADDRESS|||`,
`|||PHONE_NUMBER|||`, `|||IP_ADDRESS|||`), plus `|||SOCIAL_HANDLE|||` for the fourth kind, which real pages
carry far more often than the other three (on the 181 pages of the extraction benchmark, 95 handles against 38
e-mail addresses, 48 phone numbers and no IP address: bench/pii_bench.py). Like datatrove's PIIFormatter, only
public IP addresses are replaced: 10.0.0.1, 192.168.1.1 or 127.0.0.1 identify no one.

Each kind is a candidate pattern and a validation, both written to leave alone what real pages are full of
and that looks like a phone number or an address to a lax pattern (tests/filters/test_pii.py measures it on
real pages): numbers with thousands separators (`10.423.242`, `69 380 795`), years listed one per line,
dates (`2019-12-07`, `07.12.2019`), software versions (`120.0.6099.109`, `v1.2.3.4`), prices, coordinates
(`40.7128, -74.0060`), ISBNs, times (`12:30:45`) and C++ scopes (`std::vector`).

Phone numbers are taken in the shapes people write them, 7 to 15 digits in all (E.164's maximum), groups
joined by `-`, `.` or single spaces, never across a line break: with an international `+` prefix, with an
area code in parentheses, North America's 3-3-4, or a national number with its trunk prefix 0 in three or
more groups. A date among the groups, or an identifier word before them (ISBN, VAT, version), refuses it.
Engine-free: pipelines/pii.py applies it to the text and alt text of every document.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

EMAIL, PHONE, IP, HANDLE = "email", "phone", "ip", "handle"
KINDS = (EMAIL, PHONE, IP, HANDLE)
PLACEHOLDERS = {EMAIL: "|||EMAIL_ADDRESS|||", PHONE: "|||PHONE_NUMBER|||", IP: "|||IP_ADDRESS|||",
                HANDLE: "|||SOCIAL_HANDLE|||"}


@dataclass(kw_only=True)
class PiiConfig:
    """Settings of the personal-data step ([pii] in a config file)."""

    # Replace personal data in the text of kept documents. On by default: Dolma and datatrove's FineWeb
    # pipeline replace e-mail and IP addresses before release.
    enabled: bool = True
    # Which kinds to replace (of email, phone, ip, handle).
    kinds: tuple[str, ...] = KINDS

    def validate(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"pii.kinds: unknown kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")


# ---------------------------------------------------------------- patterns

# local@domain.tld: the local part of RFC 5322's common form (no quoted strings), a domain of labels and a
# letter TLD; a trailing dot is sentence punctuation, not part of the address.
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9_][\w.+-]{0,63}@"
                    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])")
# a dotted quad not inside a longer dotted or worded token (versions: v1.2.3.4, 1.2.3.4.5)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
# IPv6 with at least three groups, not touching a letter, digit or colon
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# an @handle: not part of an e-mail address or a word; Twitter/X's 15, Instagram's 30 characters
_HANDLE = re.compile(r"(?<![\w@.+-])@[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,28}[A-Za-z0-9_])?(?![\w@]|\.[A-Za-z])")
# a fediverse handle, @user@instance.tld (Mastodon and the like): one handle, not "@" and an e-mail address
_FEDIVERSE = re.compile(r"(?<![\w@.+-])@[A-Za-z0-9_](?:[\w.]{0,28}\w)?@"
                        r"(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
# phone candidates: optional +country, optional (area), then digit groups joined by one separator each;
# separators never include a line break; not inside a longer number ("1,299", "3/4", "v1.2") on either side
_EDGE_BEFORE, _EDGE_AFTER = r"(?<![\w+])(?<!\d[.,/-])", r"(?!\w|[.,/-]\d)"
_PHONE = re.compile(_EDGE_BEFORE + r"(\+\d{1,3}[ .-]?)?(\(\d{1,5}\)[ .-]?)?\d{1,5}(?:[ .-]\d{1,8}){1,4}"
                    + _EDGE_AFTER + "|" + _EDGE_BEFORE + r"\+\d{7,15}" + _EDGE_AFTER)
# words after which a number is an identifier of something else (a version, a book, a company, a tax number)
# words after which a number is an identifier of something else (a version, a section, a book, a company,
# an order, a tax number), and "==" / "=" (a pinned version)
_NOT_PHONE_BEFORE = re.compile(
    r"\b(?:version|ver|release|build|v|section|sec|chapter|ch|isbn(?:-1[03])?|issn|doi|id|art|vat|reg|"
    r"registration|company|order|serial|sn|ref|invoice|account|ust-idnr|uid|siret|siren|kvk|abn|ein|iban|bic|"
    r"swift|sku|part|model|item|article|product)\b[.:#]?\s*(?:[A-Z]{2}\s*)?$"
    r"|\b(?:part|model|item|serial|order|article|product)\s+(?:number|no|nr)\b[.:#]?\s*$"  # part no.
    r"|(?:〒|§|==?)\s*$"
    r"|\b[A-Z]{2}\d{2}\s?(?:[A-Z0-9]{4}\s?){1,2}$", re.I)  # the start of an IBAN: NL91 ABNA 0417 1643 00
_CURRENCY = re.compile(r"[$€£¥₹₽¢]\s*$|(?:usd|eur|gbp|rs|kr)\.?\s*$", re.I)


# e-mail look-alikes: retina image names (logo@2x.png) have a file extension where the TLD would be
_FILE_TLDS = frozenset("png jpg jpeg gif webp svg avif bmp ico tif tiff js mjs ts css scss json xml html htm "
                       "pdf zip gz txt md py rb go rs java php".split())
# an @word of code, not a person: CSS and Sass at-rules, decorators and annotations, JSDoc and Javadoc tags
_CODE_AT = frozenset(w.lower() for w in (
    "media import font-face keyframes supports property charset namespace page layer container tailwind "
    "apply include mixin extend use forward if else each for while function return content debug warn "
    "error at-root counter-style font-feature-values viewport document "
    "staticmethod classmethod abstractmethod dataclass cached_property override overload deprecated "
    "functools pytest Test Before After BeforeEach AfterEach Inject Injectable Component Autowired "
    "SuppressWarnings FunctionalInterface Entity Table Column Id Transactional Service Controller "
    "RestController RequestMapping GetMapping PostMapping NgModule Input Output HostListener "
    "param params returns return throws throw type typedef example see since author version link "
    "todo fixme ts-ignore ts-expect-error jsx vue click submit keyup change").split())
_WORD_TAIL = re.compile(r"[\w-]*")
# versions after a dotted quad ("5.5.5.5 firmware") and before one ("Firefox/115.0.2.1": a product token)
_NOT_IP_AFTER = re.compile(r"\s*(?:firmware|patch|update|release|build|beta|rc\d*|version)\b", re.I)


def _identifier_before(text: str, start: int) -> bool:
    return _NOT_PHONE_BEFORE.search(text[max(0, start - 24):start]) is not None


def _date_at(groups: list[str]) -> bool:
    """Whether three groups read as a date: yyyy-mm-dd, dd.mm.yyyy, mm/dd/yy."""
    a, b, c = (int(g) for g in groups)
    if len(groups[0]) == 4:
        return 1000 <= a <= 2999 and 1 <= b <= 12 and 1 <= c <= 31
    if len(groups[0]) <= 2 and len(groups[1]) <= 2 and len(groups[2]) in (2, 4):
        return (1 <= a <= 31 and 1 <= b <= 12) or (1 <= a <= 12 and 1 <= b <= 31)
    return False


def _has_date(rest: str) -> bool:
    """A date among the groups joined by "-", "." or "/" ("2018-10-12 06" is a date and an hour; "01 23 45"
    is not written as a date)."""
    for run in rest.split(" "):
        groups = re.split(r"[.-]", run)
        if any(_date_at(groups[i:i + 3]) for i in range(len(groups) - 2)):
            return True
    return False


def _is_phone(match: re.Match, text: str) -> bool:
    candidate = match.group(0)
    digits = sum(ch.isdigit() for ch in candidate)
    if not 7 <= digits <= 15:
        return False
    if _identifier_before(text, match.start()):
        return False
    if _CURRENCY.search(text[max(0, match.start() - 8):match.start()]):
        return False
    international, area = match.group(1), match.group(2)
    rest = candidate[len(international or "") + len(area or ""):]
    groups = re.split(r"[ .-]", rest)
    separators = set(re.findall(r"[ .-]", rest))
    if candidate.startswith("+"):
        if separators == {"."} and (len(groups) == 2 or _thousands(groups)):
            return False  # a signed decimal (+40.712776) or amount (+1.234.567), not a number to call
        return len(groups) <= 5
    shape = [len(g) for g in groups]
    french = shape == [2, 2, 2, 2, 2] and groups[0].startswith("0") and groups[0] != "00"
    if _has_date(rest) and not french:  # 06.12.34.56.78 holds "06.12.34", but five pairs are no date
        return False
    if separators == {" "} and len(groups) == 3 and len(groups[2]) == 4 and _date_at(groups):
        return False  # a date written with spaces (01 12 2019); "01 23 45 67 89" has five groups
    if area is None:
        # Without "+" or "(area)", only the two national shapes that are hard to mistake: North America's
        # 3-3-4 (316-831-6143, 555.123.4567) and a trunk prefix "0" in three or more groups (02-751-1500,
        # 03-5829-8082, 020 7946 0018, 01 23 45 67 89). Year ranges (2005-2019), scores (18 22 13 17),
        # amounts (10.423.242, 69 380 795), postcodes (〒101-0032) and ISBN groups have neither.
        # an area code with its trunk 0 and one block of the subscriber's number (Germany's 030 12345678,
        # 0171 1234567): 3-5 digits, then 6-8, written with a space
        national = (len(groups) == 2 and separators == {" "} and groups[0].startswith("0")
                    and 3 <= shape[0] <= 5 and 6 <= shape[1] <= 8 and groups[0] != "0" * shape[0])
        if shape != [3, 3, 4] and not national and not (
                len(groups) >= 3 and groups[0].startswith("0") and min(shape) >= 2):
            return False
        if set(shape) == {2} and len(groups) != 5:
            return False  # pairs are France's 01 23 45 67 89 (five); "01 02 03 04" counts
        if separators == {"."} and shape != [3, 3, 4] and not french:
            return False  # dotted numbers are versions, IPs or amounts unless NANP-shaped or France's
    return True


def _thousands(groups: list[str]) -> bool:
    """Groups of a number written with thousands separators: 1-3 digits, then groups of exactly 3."""
    return len(groups[0]) <= 3 and len(groups) > 1 and all(len(g) == 3 for g in groups[1:])


def _is_public_ip(candidate: str) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    if address.version == 4 and any(len(part) > 1 and part.startswith("0") for part in candidate.split(".")):
        return False  # 01.02.03.04 is a date or a code, not how addresses are written
    if address.version == 6 and (not any(ch.isdigit() for ch in candidate)
                                 or sum(1 for group in candidate.split(":") if group) < 3):
        return False  # dead:beef:cafe... words, and 1::2 ratios, not addresses
    return address.is_global


def find(text: str, kinds: tuple[str, ...] = KINDS) -> list[tuple[int, int, str]]:
    """The personal data in `text`: sorted, non-overlapping (start, end, kind) spans."""
    spans: list[tuple[int, int, str]] = []
    taken = bytearray(len(text))

    def add(start: int, end: int, kind: str) -> None:
        if not any(taken[start:end]):
            taken[start:end] = b"\x01" * (end - start)
            spans.append((start, end, kind))

    if HANDLE in kinds and "@" in text:
        for m in _FEDIVERSE.finditer(text):
            add(m.start(), m.end(), HANDLE)
    if EMAIL in kinds and "@" in text:
        for m in _EMAIL.finditer(text):
            if m.group(0).rsplit(".", 1)[1].lower() in _FILE_TLDS:
                continue  # logo@2x.png: a file name
            if text[m.end():m.end() + 1] == ":" and text[m.end() + 1:m.end() + 2] not in ("", " ", "\n"):
                continue  # git@github.com:org/repo: an SSH remote, not a mailbox
            add(m.start(), m.end(), EMAIL)
    if IP in kinds:
        if "." in text:
            for m in _IPV4.finditer(text):
                if (_is_public_ip(m.group(0)) and not _identifier_before(text, m.start())  # no versions
                        and text[m.start() - 1:m.start()] != "/" and not _NOT_IP_AFTER.match(text, m.end())):
                    add(m.start(), m.end(), IP)
        if "::" in text or text.count(":") >= 2:
            for m in _IPV6.finditer(text):
                groups = m.group(0).split(":")
                if len(groups) >= 6 and all(len(g) == 2 for g in groups):
                    continue  # 02:42:ac:11:00:02: a MAC or EUI-64 identifier, written in byte pairs
                if m.group(0).count(":") >= 2 and _is_public_ip(m.group(0)):
                    add(m.start(), m.end(), IP)
    if PHONE in kinds:
        for m in _PHONE.finditer(text):
            if _is_phone(m, text):
                add(m.start(), m.end(), PHONE)
    if HANDLE in kinds and "@" in text:
        for m in _HANDLE.finditer(text):
            word, after = m.group(0)[1:], text[m.end():m.end() + 1]
            if after == "-":  # @font-face, @counter-style: a handle cannot hold "-"
                word += _WORD_TAIL.match(text, m.end()).group(0)
            if word.isdigit():  # "@3" is a count or a time ("see you @5"), not a handle
                continue
            if word.lower() in _CODE_AT or after in ("/", "("):  # @media, @Override, @babel/core, @Input(
                continue
            add(m.start(), m.end(), HANDLE)
    return sorted(spans)


def redact(text: str, kinds: tuple[str, ...] = KINDS) -> tuple[str, dict[str, int]]:
    """`text` with its personal data replaced by typed placeholders, and the count of each kind replaced."""
    spans = find(text, kinds)
    if not spans:
        return text, {}
    parts, counts, at = [], {}, 0
    for start, end, kind in spans:
        parts += [text[at:start], PLACEHOLDERS[kind]]
        counts[kind] = counts.get(kind, 0) + 1
        at = end
    parts.append(text[at:])
    return "".join(parts), counts
