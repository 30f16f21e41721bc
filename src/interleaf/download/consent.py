"""Consent before bytes are kept: robots.txt (RFC 9309) per host, and X-Robots-Tag response headers.

robots.txt is parsed here rather than with urllib.robotparser because the standard library's parser does
not implement RFC 9309's `*` and `$` wildcards (a rule such as `Disallow: /*.jpg$`, common for images, never
matches there and so allows everything) and applies the first matching rule instead of the longest one.
"""

from __future__ import annotations

import logging
import re
import string
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

log = logging.getLogger(__name__)

# X-Robots-Tag directives that forbid using an image for training or indexing: img2dataset's default
# `disallowed_header_directives`, plus "none" (= noindex, nofollow).
DEFAULT_DISALLOWED_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex", "none")

# X-Robots-Tag directives that carry a value after a colon ("max-snippet: 20"); any other word before a
# colon is a user-agent token ("googlebot: noindex").
_VALUED_DIRECTIVES = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
_SEPARATORS = re.compile(r"[\s;]+")


# ---------------------------------------------------------------- X-Robots-Tag


def x_robots_directives(values: Iterable[str], user_agent_token: str) -> set[str]:
    """The X-Robots-Tag directives that apply to us: those without a user agent and those addressed to
    `user_agent_token` (case-insensitive). Each value is "[ua:] directive[, directive ...]"; a later
    "ua: directive" in the same value starts a new group ("noindex, otherbot: noai")."""
    token = user_agent_token.strip().lower()
    found: set[str] = set()
    for value in values:
        agent = None
        for part in value.split(","):
            part = part.strip().lower()
            if not part:
                continue
            head, sep, rest = part.partition(":")
            head = head.strip()
            if sep and head not in _VALUED_DIRECTIVES and " " not in head:
                agent, part = head, rest.strip()  # "ua: directive" starts a group for that agent
                if not part:
                    continue
            if agent is None or agent == token:
                if part.split(":", 1)[0].strip() in _VALUED_DIRECTIVES:
                    found.add(part.split(":", 1)[0].strip())
                else:  # "noindex noai", "noai;noimageai": separators pages use besides the comma
                    found.update(d for d in _SEPARATORS.split(part) if d)
    return found


def x_robots_refusal(values: Iterable[str], user_agent_token: str,
                     disallowed: Iterable[str] = DEFAULT_DISALLOWED_DIRECTIVES) -> str | None:
    """Why the X-Robots-Tag values forbid keeping the image, or None when they do not."""
    hit = x_robots_directives(values, user_agent_token) & {d.lower() for d in disallowed}
    return f"X-Robots-Tag forbids it: {', '.join(sorted(hit))}" if hit else None


# ---------------------------------------------------------------- robots.txt (RFC 9309)


_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")


def _normalise_path(path: str) -> str:
    """One encoding for both sides, as RFC 9309 2.2.2 asks: escapes of unreserved characters decoded (%69
    is "i"), other escapes kept in upper case (%2F stays apart from "/"), other characters UTF-8 encoded."""
    def decode(m: re.Match) -> str:
        char = chr(int(m.group(1), 16))
        return char if char in _UNRESERVED else "%" + m.group(1).upper()
    return quote(_PERCENT.sub(decode, path), safe="/*$?=&;:@!,'()+~-._%")


@dataclass
class _Rule:
    allow: bool
    path: str  # normalised, may contain * and a final $
    regex: re.Pattern | None  # compiled when the path has wildcards

    def matches(self, path: str) -> bool:
        if self.regex is None:
            return path.startswith(self.path)
        return self.regex.match(path) is not None


def _rule(allow: bool, value: str) -> _Rule:
    path = _normalise_path(value)
    if "*" not in path and not path.endswith("$"):
        return _Rule(allow, path, None)
    anchored = path.endswith("$")
    body = path[:-1] if anchored else path
    pattern = ".*".join(re.escape(piece) for piece in body.split("*")) + ("$" if anchored else "")
    return _Rule(allow, path, re.compile(pattern, re.S))


@dataclass
class RobotsTxt:
    """The rules of one robots.txt for one user agent (the group naming it, else the `*` group)."""

    rules: list[_Rule] = field(default_factory=list)
    crawl_delay: float | None = None  # seconds between requests, when the group sets one
    allow_all: bool = False  # no robots.txt (4xx): everything allowed

    @classmethod
    def parse(cls, text: str, user_agent_token: str) -> RobotsTxt:
        """RFC 9309 groups: consecutive user-agent lines share the rules that follow; groups naming the same
        agent are merged; the agent's groups win over `*`; unknown lines are ignored."""
        token = user_agent_token.strip().lower()
        groups: list[tuple[list[str], list[_Rule], list[float]]] = []  # (agents, rules, crawl delays)
        in_rules = False
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            key, sep, value = line.partition(":")
            if not sep:
                continue
            key, value = key.strip().lower(), value.strip()
            if key == "user-agent":
                if in_rules or not groups:
                    groups.append(([], [], []))
                    in_rules = False
                groups[-1][0].append(value.lower().split("/", 1)[0].strip())  # product token only
            elif key in ("allow", "disallow") and groups:
                in_rules = True
                if value:  # an empty Disallow allows everything: no rule
                    groups[-1][1].append(_rule(key == "allow", value))
            elif key == "crawl-delay" and groups:
                in_rules = True
                try:
                    groups[-1][2].append(float(value))
                except ValueError:
                    log.debug("ignoring crawl-delay %r", value)
        mine = [g for g in groups if token in g[0]]
        chosen = mine or [g for g in groups if "*" in g[0]]
        rules = [r for g in chosen for r in g[1]]
        delays = [d for g in chosen for d in g[2]]
        return cls(rules=rules, crawl_delay=max(delays) if delays else None)

    def allowed(self, url: str) -> bool:
        """RFC 9309 2.2.2: the longest matching rule wins; on a tie allow wins; no match allows."""
        if self.allow_all:
            return True
        parts = urlsplit(url)
        path = _normalise_path((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        best: _Rule | None = None
        for rule in self.rules:
            if rule.matches(path) and (best is None or len(rule.path) > len(best.path)
                                       or (len(rule.path) == len(best.path) and rule.allow)):
                best = rule
        return best is None or best.allow


class RobotsUnavailable(Exception):
    """robots.txt could not be read (server error or network failure): the host is not fetched from.
    `status` is the failure status the host's URLs get (dns, connect, timeout, http_5xx, private_address)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def path_matcher(pattern: str) -> Callable[[str], bool]:
    """A robots.txt-style path pattern (RFC 9309: `*` anywhere, `$` at the end, a prefix otherwise) as a
    test of a URL's path and query; other protocols (TDMRep's tdmrep.json) reuse the syntax."""
    rule = _rule(True, pattern)
    return lambda path: rule.matches(_normalise_path(path))


def origin_of(url: str) -> str:
    """scheme://host:port of a URL, in lower case: what robots.txt and tdmrep.json are kept per."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class PerOrigin:
    """One value per origin, made by `load(origin)` on first use and kept; concurrent callers for one origin
    wait for one load (the site-wide files of robots.txt and TDMRep)."""

    def __init__(self, load: Callable[[str], object]):
        self._load = load
        self._lock = threading.Lock()
        self._origins: dict[str, tuple[threading.Lock, list]] = {}

    def get(self, url: str):
        origin = origin_of(url)
        with self._lock:
            entry = self._origins.get(origin)
            if entry is None:
                entry = self._origins[origin] = (threading.Lock(), [])
        origin_lock, slot = entry
        with origin_lock:
            if not slot:
                slot.append(self._load(origin))
        return slot[0]

    def peek(self, url: str):
        """The value of `url`'s origin if already loaded, else None; never loads."""
        with self._lock:
            entry = self._origins.get(origin_of(url))
        return entry[1][0] if entry is not None and entry[1] else None


class RobotsCache:
    """robots.txt of each host (scheme://host:port), fetched once on first use and kept.

    `fetch_text(robots_url) -> (code, text)` does the request (the fetcher's guarded client) and raises
    RobotsUnavailable when it cannot reach the server. Per RFC 9309 2.3.1: a 4xx other than 429 means no
    rules (everything allowed); a 5xx or 429 means the host's robots.txt is unreachable, which the RFC
    treats as "disallow everything": we fetch nothing from that host in this run and give its URLs the
    failure's status, transient, so a later run asks again. Concurrent callers for one host wait for one
    fetch.
    """

    def __init__(self, fetch_text: Callable[[str], tuple[int, str]], user_agent_token: str):
        self._fetch_text = fetch_text
        self._token = user_agent_token
        self._hosts = PerOrigin(lambda origin: self._load(origin + "/robots.txt"))
        self.fetches = 0  # robots.txt requests made (for tests and counters)

    def get(self, url: str) -> RobotsTxt:
        """The robots.txt for `url`'s host; raises RobotsUnavailable (cached too) when unreachable."""
        result = self._hosts.get(url)
        if isinstance(result, RobotsUnavailable):
            raise result
        return result

    def crawl_delay(self, url: str) -> float | None:
        """The Crawl-delay of `url`'s host if its robots.txt is already loaded; never fetches."""
        result = self._hosts.peek(url)
        return result.crawl_delay if isinstance(result, RobotsTxt) else None

    def _load(self, robots_url: str) -> RobotsTxt | RobotsUnavailable:
        self.fetches += 1
        try:
            code, text = self._fetch_text(robots_url)
        except RobotsUnavailable as e:
            log.info("robots.txt unavailable, host skipped: %s", e)
            return e
        if 200 <= code < 300:
            return RobotsTxt.parse(text, self._token)
        if 400 <= code < 500 and code != 429:
            return RobotsTxt(allow_all=True)
        status = "http_5xx" if code >= 500 else "http_4xx"
        return RobotsUnavailable(status, f"HTTP {code} for {robots_url}: robots.txt unreachable, the host "
                                         "is treated as disallowed for this run (RFC 9309 2.3.1.4)")
