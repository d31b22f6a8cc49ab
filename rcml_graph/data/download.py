"""Safe HTTP(S) downloads: scheme allow-list, size and time limits, atomic writes.

Everything that reaches the network in ``rcml_graph`` goes through :func:`fetch_url`:

* only ``http``/``https`` URLs (``file://`` only when explicitly allowed, for local mirrors);
  redirects are followed by hand so that every hop's scheme is re-checked (an
  ``http -> file://`` redirect is refused) and their number is capped;
* ``max_bytes`` is enforced from ``Content-Length`` before reading and again while streaming,
  so a server that lies about or omits the length cannot fill the disk;
* a per-request socket timeout plus an overall deadline (a slow-drip server cannot hold a
  worker forever);
* retries with exponential backoff on 5xx, 429, timeouts and connection errors, never on
  other 4xx answers or on DNS failures (those do not heal within seconds);
* the body streams into a hidden temporary file in the destination folder and is
  ``os.replace``-d into place only once complete, so no partial file ever carries the final
  name.

:func:`safe_filename` turns arbitrary product ids into path-safe file names and
:func:`download_amazon_files` fetches the official Amazon metadata dumps.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

__all__ = [
    "AMAZON_RELEASES",
    "FetchResult",
    "FetchStatus",
    "amazon_file_url",
    "check_url",
    "download_amazon_files",
    "fetch_url",
    "is_valid_gzip",
    "safe_filename",
]

FetchStatus = Literal["ok", "cached", "not_found", "too_large", "refused", "unreachable", "timeout", "error"]

USER_AGENT = "rcml_graph/0.1 (research; +https://arxiv.org/abs/2508.17497)"
MAX_REDIRECTS = 5
_CHUNK_BYTES = 64 * 1024
_RETRYABLE_HTTP = frozenset({429, 500, 502, 503, 504})
_REDIRECT_HTTP = frozenset({301, 302, 303, 307, 308})


@dataclass
class FetchResult:
    """Outcome of one :func:`fetch_url` call.

    Attributes:
        url: The URL that was asked for.
        status: ``ok`` (written to ``path``), ``cached`` (already present, not fetched),
            ``not_found`` (HTTP 4xx other than 429, or a missing local file), ``too_large``
            (over ``max_bytes``), ``refused`` (scheme, redirect target or URL not allowed),
            ``unreachable`` (DNS failure, connection refused or reset), ``timeout`` (socket
            timeout or overall deadline) or ``error`` (5xx after all retries, other errors).
        path: The destination when ``status`` is ``ok`` or ``cached``, else ``None``.
        final_url: The URL the body came from after redirects.
        num_bytes: Bytes written (``ok``) or present (``cached``).
        http_status: Last HTTP status code seen, ``None`` when no HTTP answer came.
        attempts: Number of request attempts made (1 + retries used).
        error: Human-readable reason when ``status`` is not ``ok``/``cached``.
        content_type: ``Content-Type`` header of the final answer, if any.
    """

    url: str
    status: FetchStatus
    path: Path | None = None
    final_url: str | None = None
    num_bytes: int = 0
    http_status: int | None = None
    attempts: int = 0
    error: str | None = None
    content_type: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the file is present at :attr:`path` (freshly fetched or cached)."""
        return self.status in ("ok", "cached")


class _Failure(Exception):
    """Internal: a terminal or retryable failure of one attempt."""

    def __init__(self, status: FetchStatus, message: str, *, retryable: bool = False,
                 http_status: int | None = None) -> None:
        super().__init__(message)
        self.status: FetchStatus = status
        self.retryable = retryable
        self.http_status = http_status


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand every 3xx back to the caller, which re-checks the target scheme itself."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        return None


def _build_opener() -> urllib.request.OpenerDirector:
    # Built by hand rather than with build_opener(), which would add file://, ftp:// and
    # data: handlers: only http(s) may ever be opened here (file:// has its own bounded copy).
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(), _NoRedirect(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


_ALLOWED_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,10})?")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)
_MAX_STEM_CHARS = 120


def safe_filename(product_id: str, suffix: str = "") -> str:
    """Map an arbitrary product id to a file name that cannot escape its folder.

    Ids made only of ``[A-Za-z0-9._-]`` (not starting with a dot, not a Windows device
    name, at most 120 characters) map to themselves, so ASIN ``B00ABC1234`` becomes
    ``B00ABC1234.jpg``. Any other id keeps its allowed characters (others become ``_``,
    leading dots are dropped, the result is cut to 100 characters) and gets ``-`` plus the
    first 16 hex digits of the SHA-256 of the id, so distinct ids stay distinct and the
    mapping is stable across runs and machines.

    Args:
        product_id: Any non-empty string.
        suffix: ``""`` or a dot followed by 1-10 ASCII letters/digits, e.g. ``".jpg"``.

    Returns:
        A name without ``/``, ``\\``, ``..`` components, NUL or control characters, at most
        148 characters long.

    Raises:
        ValueError: If ``product_id`` is empty or not a string, or ``suffix`` is malformed.
    """
    if not isinstance(product_id, str) or product_id == "":
        raise ValueError(f"product id must be a non-empty string, got {product_id!r}")
    if not _SUFFIX.fullmatch(suffix):
        raise ValueError(f"suffix {suffix!r} is not accepted; use '' or '.' + 1-10 ASCII letters/digits")
    plain = (
        _PLAIN_NAME.fullmatch(product_id) is not None
        and len(product_id) <= _MAX_STEM_CHARS
        and product_id.split(".")[0].upper() not in _WINDOWS_RESERVED
    )
    if plain:
        return product_id + suffix
    kept = "".join(c if _ALLOWED_NAME_CHARS.fullmatch(c) else "_" for c in product_id).lstrip(".")
    digest = hashlib.sha256(product_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    stem = kept[:100]
    return f"{stem}-{digest}{suffix}" if stem else f"id-{digest}{suffix}"


def check_url(url: str, *, allow_file: bool = False) -> str:
    """Validate a URL's scheme and host and return its lower-cased scheme.

    Args:
        url: The URL to check.
        allow_file: Also accept ``file://`` URLs (local mirrors).

    Raises:
        ValueError: If the scheme is not ``http``/``https`` (or ``file`` when allowed), or an
            http(s) URL has no host.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"malformed URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    accepted = ("http", "https", "file") if allow_file else ("http", "https")
    if scheme not in accepted:
        raise ValueError(f"URL scheme {scheme!r} of {url!r} is not allowed; accepted: {', '.join(accepted)}")
    if scheme in ("http", "https") and not parts.hostname:
        raise ValueError(f"URL {url!r} has no host")
    if any(ord(c) < 32 or c == "\x7f" for c in url):
        raise ValueError(f"URL {url!r} contains control characters")
    return scheme


def _temp_in(dest: Path) -> tuple[int, Path]:
    fd, name = tempfile.mkstemp(prefix=f".{dest.name[:60]}.", suffix=".part", dir=dest.parent)
    return fd, Path(name)


def _stream_to(dest: Path, read_chunk, *, max_bytes: int, deadline: float, url: str) -> int:
    """Copy ``read_chunk()`` output into a temp file, then atomically rename it to ``dest``."""
    fd, tmp = _temp_in(dest)
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                if time.monotonic() > deadline:
                    raise _Failure("timeout", f"overall deadline exceeded after {written} bytes of {url}",
                                   retryable=False)
                chunk = read_chunk(min(_CHUNK_BYTES, max_bytes + 1 - written))
                if not chunk:
                    break
                written += len(chunk)
                if written > max_bytes:
                    raise _Failure("too_large", f"{url} is larger than max_bytes={max_bytes}")
                out.write(chunk)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


def _fetch_file(url: str, dest: Path, *, max_bytes: int, deadline: float) -> int:
    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    if not path.is_file():
        raise _Failure("not_found", f"local file {path} of {url} does not exist")
    if path.stat().st_size > max_bytes:
        raise _Failure("too_large", f"{url} has {path.stat().st_size} bytes > max_bytes={max_bytes}")
    with path.open("rb") as src:
        return _stream_to(dest, src.read, max_bytes=max_bytes, deadline=deadline, url=url)


def _classify_url_error(exc: BaseException, url: str) -> _Failure:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return _Failure("unreachable", f"cannot resolve host of {url}: {reason}")
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return _Failure("timeout", f"timed out fetching {url}", retryable=True)
    if isinstance(reason, (ConnectionError, OSError)):
        return _Failure("unreachable", f"cannot connect to {url}: {reason}", retryable=True)
    return _Failure("error", f"fetching {url} failed: {reason}", retryable=True)


def _attempt_http(url: str, dest: Path, *, opener: urllib.request.OpenerDirector, max_bytes: int,
                  timeout_s: float, deadline: float) -> tuple[int, str, int, str | None]:
    """One attempt including redirects; returns (bytes, final_url, http_status, content_type)."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Failure("timeout", f"overall deadline exceeded before fetching {current}")
        request = urllib.request.Request(
            current, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        try:
            response = opener.open(request, timeout=min(timeout_s, remaining))
        except urllib.error.HTTPError as exc:
            with exc:
                code = exc.code
                if code in _REDIRECT_HTTP:
                    location = exc.headers.get("Location")
                    if not location:
                        raise _Failure("error", f"HTTP {code} from {current} without Location", http_status=code)
                    target = urllib.parse.urljoin(current, location)
                    try:
                        check_url(target, allow_file=False)
                    except ValueError as bad:
                        raise _Failure("refused", f"redirect from {current} refused: {bad}", http_status=code)
                    current = target
                    continue
                if code in _RETRYABLE_HTTP or code >= 500:
                    raise _Failure("error", f"HTTP {code} from {current}", retryable=True, http_status=code)
                raise _Failure("not_found", f"HTTP {code} from {current}", http_status=code)
        except (urllib.error.URLError, OSError) as exc:
            raise _classify_url_error(exc, current)
        except http.client.HTTPException as exc:
            raise _Failure("error", f"bad HTTP answer from {current}: {exc!r}", retryable=True)
        with response:
            length = response.headers.get("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) > max_bytes:
                raise _Failure("too_large", f"{current} declares {int(length)} bytes > max_bytes={max_bytes}",
                               http_status=response.status)
            try:
                written = _stream_to(dest, response.read, max_bytes=max_bytes, deadline=deadline, url=current)
            except (TimeoutError, socket.timeout):
                raise _Failure("timeout", f"timed out reading {current}", retryable=True,
                               http_status=response.status)
            except (ConnectionError, urllib.error.URLError, http.client.HTTPException) as exc:
                raise _Failure("unreachable", f"connection to {current} broke: {exc}", retryable=True,
                               http_status=response.status)
            return written, current, response.status, response.headers.get("Content-Type")
    raise _Failure("refused", f"more than {MAX_REDIRECTS} redirects starting at {url}")


def fetch_url(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    retries: int = 3,
    backoff_s: float = 0.5,
    allow_file: bool = False,
    deadline_s: float | None = None,
) -> FetchResult:
    """Download ``url`` to ``dest`` within size and time limits; never raises for network errors.

    Args:
        url: ``http(s)://`` URL (or ``file://`` when ``allow_file``).
        dest: Final path; its folder must exist. Written atomically (temp file + rename).
        max_bytes: Largest accepted body in bytes.
        timeout_s: Socket timeout of each connect/read.
        retries: Extra attempts after a retryable failure (5xx, 429, timeout, connection error).
        backoff_s: Sleep before retry ``k`` (1-based) is ``backoff_s * 2 ** (k - 1)``.
        allow_file: Accept ``file://`` URLs (copied with the same size limit).
        deadline_s: Overall time budget across attempts, redirects and streaming; by default
            ``(retries + 1) * 4 * timeout_s`` plus the backoff sleeps.

    Returns:
        A :class:`FetchResult`; ``status == "ok"`` iff ``dest`` now holds the complete body.
        A bad scheme gives ``status == "refused"`` with the :func:`check_url` message.

    Raises:
        ValueError: If ``max_bytes``, ``timeout_s``, ``retries`` or ``backoff_s`` is out of range.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if retries < 0 or backoff_s < 0:
        raise ValueError(f"retries and backoff_s must be >= 0, got {retries} and {backoff_s}")
    dest = Path(dest)
    try:
        scheme = check_url(url, allow_file=allow_file)
    except ValueError as exc:
        return FetchResult(url=url, status="refused", error=str(exc))
    if deadline_s is None:
        deadline_s = (retries + 1) * 4 * timeout_s + backoff_s * (2 ** retries - 1)
    deadline = time.monotonic() + deadline_s
    opener = _build_opener()
    last: _Failure | None = None
    for attempt in range(1, retries + 2):
        try:
            if scheme == "file":
                written = _fetch_file(url, dest, max_bytes=max_bytes, deadline=deadline)
                return FetchResult(url=url, status="ok", path=dest, final_url=url, num_bytes=written,
                                   attempts=attempt)
            written, final_url, code, ctype = _attempt_http(
                url, dest, opener=opener, max_bytes=max_bytes, timeout_s=timeout_s, deadline=deadline)
            return FetchResult(url=url, status="ok", path=dest, final_url=final_url, num_bytes=written,
                               http_status=code, attempts=attempt, content_type=ctype)
        except _Failure as failure:
            last = failure
        except OSError as exc:  # local disk problems while writing
            return FetchResult(url=url, status="error", attempts=attempt, error=f"writing {dest} failed: {exc}")
        sleep_s = backoff_s * 2 ** (attempt - 1)
        if not last.retryable or attempt > retries or time.monotonic() + sleep_s >= deadline:
            break
        time.sleep(sleep_s)
    assert last is not None
    return FetchResult(url=url, status=last.status, http_status=last.http_status, attempts=attempt,
                       error=str(last))


# Public locations of the official Amazon product-metadata (and review) dumps, by release.
# base_url= in download_amazon_files() replaces everything before the file name, for mirrors
# and for the tests, which serve these names from a local HTTP server on 127.0.0.1.
AMAZON_RELEASES: dict[str, dict[str, str]] = {
    "2014": {  # McAuley et al., SIGIR 2015 ("Image-based recommendations on styles and substitutes")
        "meta": "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_{category}.json.gz",
        "reviews": "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_{category}.json.gz",
    },
    "2018": {  # Ni et al., EMNLP 2019 (Amazon review data v2)
        "meta": "https://jmcauley.ucsd.edu/data/amazon_v2/metaFiles2/meta_{category}.json.gz",
        "reviews": "https://jmcauley.ucsd.edu/data/amazon_v2/categoryFiles/{category}.json.gz",
    },
    "2023": {  # Hou et al., 2024 (Amazon Reviews 2023)
        "meta": "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/meta_categories/meta_{category}.jsonl.gz",
        "reviews": "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/review_categories/{category}.jsonl.gz",
    },
}
_CATEGORY = re.compile(r"[A-Za-z0-9_&-]{1,100}")


def amazon_file_url(release: str, category: str, kind: str = "meta", *, base_url: str | None = None) -> str:
    """URL of one official Amazon dump file.

    Args:
        release: ``"2014"``, ``"2018"`` or ``"2023"``.
        category: File-name category as published, e.g. ``"Magazine_Subscriptions"``.
        kind: ``"meta"`` (product metadata) or ``"reviews"``.
        base_url: Replaces the official folder (everything before the file name).

    Raises:
        ValueError: For an unknown release or kind, or a category with characters outside
            ``[A-Za-z0-9_&-]``.
    """
    if release not in AMAZON_RELEASES:
        raise ValueError(f"unknown Amazon release {release!r}; available: {', '.join(AMAZON_RELEASES)}")
    patterns = AMAZON_RELEASES[release]
    if kind not in patterns:
        raise ValueError(f"unknown file kind {kind!r}; available: {', '.join(patterns)}")
    if not _CATEGORY.fullmatch(category):
        raise ValueError(f"category {category!r} is not accepted; use letters, digits, '_', '&' or '-'")
    url = patterns[kind].format(category=urllib.parse.quote(category))
    if base_url is not None:
        url = base_url.rstrip("/") + "/" + url.rsplit("/", 1)[1]
    return url


def is_valid_gzip(path: Path) -> bool:
    """Whether ``path`` is a complete gzip file (streams it once; memory stays bounded)."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
        return True
    except (OSError, EOFError, zlib.error):
        return False


def download_amazon_files(
    release: str,
    category: str,
    out_dir: Path,
    *,
    base_url: str | None = None,
    kinds: Sequence[str] = ("meta",),
    max_bytes: int = 20_000_000_000,
    timeout_s: float = 60.0,
    retries: int = 3,
    backoff_s: float = 2.0,
    deadline_s: float | None = 6 * 3600.0,
) -> list[FetchResult]:
    """Fetch the official Amazon dump files of one category into ``out_dir``.

    Resumable: a file already under its final name that is a complete gzip is kept and
    reported as ``cached`` without touching the network (downloads are atomic, so a file
    under the final name is complete unless it was damaged afterwards; a damaged one is
    fetched again).

    Args:
        release: ``"2014"``, ``"2018"`` or ``"2023"``.
        category: Category as in the official file names, e.g. ``"Magazine_Subscriptions"``.
        out_dir: Target folder, created if missing. Files keep their official names.
        base_url: Mirror folder replacing the official one (see :data:`AMAZON_RELEASES`).
        kinds: Which files: any of ``"meta"`` and ``"reviews"``.
        max_bytes: Size limit per file (the largest 2018 metadata file is a few GB).
        timeout_s: Socket timeout per connect/read.
        retries: Extra attempts on retryable failures.
        backoff_s: Base of the exponential backoff between attempts.
        deadline_s: Overall time budget per file.

    Returns:
        One :class:`FetchResult` per kind, in order.

    Raises:
        ValueError: For an unknown release, kind or malformed category.
    """
    urls = [amazon_file_url(release, category, kind, base_url=base_url) for kind in kinds]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for url in urls:
        dest = out_dir / safe_filename(urllib.parse.unquote(url.rsplit("/", 1)[1]))
        if dest.is_file() and is_valid_gzip(dest):
            results.append(FetchResult(url=url, status="cached", path=dest, num_bytes=dest.stat().st_size))
            continue
        result = fetch_url(url, dest, max_bytes=max_bytes, timeout_s=timeout_s, retries=retries,
                           backoff_s=backoff_s, deadline_s=deadline_s)
        if result.status == "ok" and not is_valid_gzip(dest):
            dest.unlink(missing_ok=True)
            result = FetchResult(url=url, status="error", final_url=result.final_url, http_status=result.http_status,
                                 attempts=result.attempts, error=f"{url} did not return a complete gzip file")
        results.append(result)
    return results
