"""Blocked domains and URLs, and banned words in URLs: applied to page URLs at ingest and to image URLs before
any request (and to every redirect target) in the fetch stage.

Lists:
- UT1's blacklists (Université Toulouse 1 Capitole, Fabrice Prigent; CC BY-SA 4.0) as datatrove ships them
  in its wheel (datatrove/assets/url_filterblacklistsv0_3_0.tar.gz, 4,558,939 domains and 19,586 URLs,
  mostly UT1's adult category); datatrove's URLFilter applies the same file to FineWeb. Read offline from
  the installed package (datatrove's code is not imported).
- files the user gives (`files`), one entry a line, `#` starts a comment: a domain (its subdomains are
  blocked with it), an IP address, or a URL (`host/path`, a scheme and a leading `www.` are ignored; it
  blocks every URL under it, as squidGuard reads the UT1 lists: `host/dir` blocks `host/dir/page?x=1`).
Hosts are compared in one form: lower case, punycode, and IP addresses as a browser requests them (an IPv4
address written in decimal, hex, octal or short form, or inside an IPv6 address, is its dotted quad).
URLs are compared in lower case, percent-escapes decoded and empty path segments left out.
A host is blocked when it or any parent domain is listed (`a.b.example.com` is checked as itself,
`b.example.com`, `example.com` and `com`): UT1 lists whole adult TLDs such as `xxx`. datatrove checks the
registered domain and the full host only.

Banned words (datatrove's URLFilter rules and word lists, datatrove/assets/*.txt): a URL is refused when
one of its words (split at every non-alphanumeric character, lower case) is a banned word, when
`soft_word_threshold` or more of its words are soft-banned words, or when a banned subword occurs anywhere
in it once non-alphanumerics are removed.

Each worker process builds the domain table once (about 8 s measured on this 2-core machine, 35 MB: a
sorted array of 64-bit hashes of the 4.56 million domains, read from the archive in chunks) and shares it
between threads.

Reasons: `blocked_domain`, `blocked_url`, `banned_url_word`.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import re
import tarfile
import threading
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import numpy as np

from interleaf.download.urls import MAX_URL_CHARS, as_read, parse

log = logging.getLogger(__name__)

BLOCKED_DOMAIN, BLOCKED_URL, BANNED_URL_WORD = "blocked_domain", "blocked_url", "banned_url_word"
REASONS = (BLOCKED_DOMAIN, BLOCKED_URL, BANNED_URL_WORD)
UT1_ARCHIVE = "url_filterblacklistsv0_3_0.tar.gz"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, kw_only=True)
class BlocklistConfig:
    """Settings of the URL blocklist ([blocklist] in a config file), used by ingest and fetch."""

    # UT1's domain and URL lists from the datatrove package (on in datatrove's FineWeb pipeline)
    ut1: bool = True
    # The user's own lists: files of domains and URLs (format in the module docstring)
    files: tuple[str, ...] = ()
    # datatrove's banned-word rules on URLs (on in its URLFilter by default)
    banned_url_words: bool = True
    # soft-banned words a URL may hold before it is refused; datatrove's default
    soft_word_threshold: int = 2

    @property
    def active(self) -> bool:
        return self.ut1 or bool(self.files) or self.banned_url_words

    def validate(self) -> None:
        if self.soft_word_threshold < 1:
            raise ValueError(f"blocklist.soft_word_threshold must be at least 1, found "
                             f"{self.soft_word_threshold!r}")
        if self.ut1 or self.banned_url_words:
            assets_dir()
        for path in self.files:
            if not os.path.isfile(path):
                raise ValueError(f"blocklist file {path} does not exist")
            try:
                for number, entry in user_entries(path):
                    if "*" in entry:
                        raise ValueError(f"blocklist file {path} line {number}: {entry[:80]!r} has a "
                                         "wildcard, which lists do not take: give the domain (its "
                                         "subdomains are blocked with it) or the URL")
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"blocklist file {path} cannot be read as UTF-8 text: {e}") from None


def user_entries(path: str):
    """(line number, entry) of a user's list: comments, blank lines and a byte-order mark left out."""
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            entry = line.split("#", 1)[0].strip()
            if entry:
                yield number, entry


def assets_dir() -> str:
    """datatrove's asset folder in the installed package (found without importing datatrove)."""
    spec = importlib.util.find_spec("datatrove")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the UT1 blocklist and banned URL words come with the datatrove package: pip "
                         "install datatrove==0.10.1, or set blocklist.ut1 and blocklist.banned_url_words "
                         "to false")
    path = os.path.join(list(spec.submodule_search_locations)[0], "assets")
    if not os.path.isfile(os.path.join(path, UT1_ARCHIVE)):
        raise ValueError(f"{path} lacks {UT1_ARCHIVE}: a datatrove release without its assets")
    return path


def _canonical_host(host: str) -> str:
    """A host as the lists write it: lower case, no trailing dot, punycode for an internationalised name,
    and an IPv4 address as a dotted quad whichever form the URL gave it in (decimal "2130706433", "127.1",
    hex, octal: a browser requests them all as 127.0.0.1), an IPv4-mapped IPv6 address as its IPv4."""
    host = host.lower().strip("[]").rstrip(".")
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return host
        return str(address.ipv4_mapped or address)  # compressed: "2001:db8:0:0::2" is "2001:db8::2"
    try:  # the URL standard's host parser: punycode by UTS 46 ("faß" is xn--fa-hia, not "fass"), an IPv4
        return parse(f"http://{host}/").hostname.rstrip(".")  # address in any form as a dotted quad
    except ValueError:
        return host


_MAX_DOMAIN = 253  # characters of a DNS name


def ipv4_form(host: str) -> bool:
    """Whether a canonical host is a dotted-quad IPv4 address."""
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def host_of(url: str) -> str | None:
    """The URL's host as the lists write it (_canonical_host), or None when it has none."""
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    return _canonical_host(host) if host else None


def _url_key(url: str) -> str:
    """host/path?query as the URL lists write URLs: without scheme, userinfo, port, fragment or a leading
    "www."; in lower case, percent-escapes decoded, empty segments and ";parameters" of segments left out
    (squidGuard, which the UT1 lists are written for, matches URLs in lower case)."""
    text = url.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("#", 1)[0]
    end = min((i for i in (text.find("/"), text.find("?")) if i >= 0), default=len(text))
    host, rest = text[:end], text[end:].removeprefix("/")
    host = host.rsplit("@", 1)[-1]
    if host.startswith("[") and "]" in host:  # an IPv6 literal, with or without a port
        host = host[:host.index("]") + 1]
    elif host.count(":") == 1:  # a port; more colons: a bare IPv6 entry
        host = host.rsplit(":", 1)[0]
    host = _canonical_host(host)
    if host.startswith("www.") and "." in host[4:]:  # not "www.com" to "com"
        host = host[4:]
    path, qsep, query = rest.partition("?")
    segments = [seg.split(";", 1)[0] for seg in unquote(path).lower().split("/")]
    path = "/".join(seg for seg in segments if seg)
    tail = path + (qsep + query.lower() if query else "")
    return f"{host}/{tail}" if tail else host


def _url_prefixes(key: str, longest: int):
    """The key, then the key without its query, then each shorter path at a segment boundary (a listed
    "host/dir" blocks "host/dir/page.html"): the entries of a URL list that cover the URL. Only those of at
    most `longest` characters (the longest entry): linear in the key however many segments it has."""
    if len(key) <= longest:
        yield key
    path = key.split("?", 1)[0]
    if path != key and len(path) <= longest:
        yield path
    first = path.find("/")
    cut = path.rfind("/", 0, min(len(path), longest + 1))
    while cut > first >= 0:
        yield path[:cut]
        cut = path.rfind("/", 0, cut)


def _words(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return {_NON_ALNUM.sub("", line.strip().lower()) for line in f
                if line.strip() and not line.startswith("#")} - {""}


class Blocklist:
    """The lists of a BlocklistConfig, loaded: `match(url)` gives a (reason, what matched) or None."""

    CHUNK = 8 << 20

    def __init__(self, config: BlocklistConfig):
        self.config = config
        hashes: list[np.ndarray] = []
        self.urls: set[str] = set()
        if config.ut1:
            with tarfile.open(os.path.join(assets_dir(), UT1_ARCHIVE), "r:gz") as tar:
                for member in tar:  # in archive order: one pass over the compressed stream
                    if member.name == "domains":
                        hashes.append(self._hash_lines(tar.extractfile(member)))
                    elif member.name == "urls":
                        self.urls |= {_url_key(line.decode("utf-8", "replace"))
                                      for line in tar.extractfile(member).read().splitlines() if line.strip()}
        for path in config.files:
            domains = []
            for _, entry in user_entries(path):
                if "/" in entry.split("://", 1)[-1] or "?" in entry:  # a URL entry, not a domain
                    self.urls.add(_url_key(entry))
                else:
                    domains.append(hash(_url_key(entry).encode()))
            hashes.append(np.asarray(domains, dtype=np.int64))
        self.domains = np.unique(np.concatenate(hashes)) if hashes else np.empty(0, dtype=np.int64)
        self.banned = self.soft = set()
        self.subwords = None
        if config.banned_url_words:
            assets = assets_dir()
            self.banned = _words(os.path.join(assets, "banned_words.txt"))
            self.soft = _words(os.path.join(assets, "soft_banned_words.txt"))
            subwords = sorted(_words(os.path.join(assets, "banned_subwords.txt")), key=len, reverse=True)
            self.subwords = re.compile("|".join(map(re.escape, subwords))) if subwords else None
        self.longest_url = max(map(len, self.urls), default=0)
        log.info("blocklist: %d domains, %d URLs, %d banned words, %d soft, subwords %s", self.domains.size,
                 len(self.urls), len(self.banned), len(self.soft), "on" if self.subwords else "off")

    def _hash_lines(self, stream) -> np.ndarray:
        """64-bit hashes of the stream's lines, read in chunks (the UT1 domain list is 124 MB as text)."""
        parts, tail = [], b""
        while chunk := stream.read(self.CHUNK):
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            parts.append(np.fromiter((hash(line.strip().lower()) for line in lines if line.strip()),
                                     dtype=np.int64))
        if tail.strip():
            parts.append(np.asarray([hash(tail.strip().lower())], dtype=np.int64))
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def _listed(self, domain: str) -> bool:
        h = hash(domain.encode())
        i = int(np.searchsorted(self.domains, h))
        return i < self.domains.size and int(self.domains[i]) == h

    def match(self, url: str) -> tuple[str, str] | None:
        """(reason, the entry or word that matched) when `url` is blocked, else None. The URL is read as a
        browser reads it first (download.urls.parse: "http://listed.example\\@other.example/" is a URL of
        listed.example)."""
        try:
            record = parse(as_read(url))
            url, host = record.href, _canonical_host(record.hostname)
        except ValueError:  # judged as written
            host = host_of(url)
        if host and self.domains.size and (":" in host or ipv4_form(host)):
            if self._listed(host):  # an address is listed as itself, it has no parent domains
                return BLOCKED_DOMAIN, host
        elif host and self.domains.size:
            # the host and each parent domain, shortest last; a DNS name (a listed one) has at most 253
            # characters, so a longer host is looked up from that length on (linear in the host)
            start = 0
            if len(host) > _MAX_DOMAIN:
                dot = host.find(".", len(host) - _MAX_DOMAIN - 1)
                start = dot + 1 if dot >= 0 else len(host)
            while True:
                domain = host[start:]
                if domain and self._listed(domain):
                    return BLOCKED_DOMAIN, domain
                dot = host.find(".", start)
                if dot < 0:
                    break
                start = dot + 1
        if self.urls:
            for key in _url_prefixes(_url_key(url), self.longest_url):
                if key in self.urls:
                    return BLOCKED_URL, key
        if self.banned or self.soft or self.subwords:
            lowered = url[:MAX_URL_CHARS].lower()  # longer URLs are not requested; their tail is not read
            words = set(_NON_ALNUM.split(lowered))
            hit = next((w for w in words if w in self.banned), None)
            if hit:
                return BANNED_URL_WORD, hit
            soft = sorted(w for w in words if w in self.soft)
            if len(soft) >= self.config.soft_word_threshold:
                return BANNED_URL_WORD, "+".join(soft)
            if self.subwords is not None and (m := self.subwords.search(_NON_ALNUM.sub("", lowered))):
                return BANNED_URL_WORD, m.group(0)
        return None


_LOADED: dict[BlocklistConfig, Blocklist] = {}
_LOCK = threading.Lock()


def load_blocklist(config: BlocklistConfig) -> Blocklist | None:
    """The loaded lists of `config`, built once per process and shared by its threads; None when inactive."""
    if not config.active:
        return None
    with _LOCK:
        if config not in _LOADED:
            _LOADED[config] = Blocklist(config)
        return _LOADED[config]
