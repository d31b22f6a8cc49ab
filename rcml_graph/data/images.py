"""Product-image download, verification and manifest.

:func:`download_images` takes ``(product_id, candidate URLs)`` pairs and leaves one RGB JPEG
per product under ``image_dir/safe_filename(product_id, ".jpg")``, plus an
:class:`ImageManifest` with one status per product:

* ``ok``: a verified image is stored (fetched now, or already there: ``cached``);
* ``missing``: no URL, HTTP 4xx/5xx, timeout, or no network (the run goes on);
* ``broken``: bytes arrived but do not decode as an accepted image format;
* ``too_large``: over the byte limit, or over the pixel limit (decompression-bomb guard);
* ``refused``: URL scheme not allowed, a redirect to one, or a local path leaving ``base_dir``.

Candidate URLs may be ``http(s)://``, ``file://`` (local mirrors) or plain relative paths
resolved against ``base_dir`` (the offline demo lists ``images/<asin>.jpg``). Downloads go
through :func:`rcml_graph.data.download.fetch_url` (size and time limits, retries, atomic
writes); every stored file is written to a temporary name first and renamed into place, so
a crash never leaves a half-written image under its final name.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from PIL import Image
from tqdm.auto import tqdm

from rcml_graph.data.download import FetchResult, fetch_url, safe_filename

__all__ = [
    "ACCEPTED_FORMATS",
    "IMAGE_STATUSES",
    "ImageManifest",
    "ImageRecord",
    "download_images",
    "load_manifest",
    "write_manifest",
]

ImageStatus = Literal["ok", "missing", "broken", "too_large", "refused"]
IMAGE_STATUSES: tuple[str, ...] = ("ok", "missing", "broken", "too_large", "refused")
# Formats product images come in; anything else (EPS, PSD, ...) is "broken" and never parsed.
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO")
MANIFEST_VERSION = 1
# When several candidate URLs fail, report the most informative failure.
_FAILURE_PRIORITY = {"broken": 3, "too_large": 2, "refused": 1, "missing": 0}
_FETCH_TO_IMAGE: dict[str, ImageStatus] = {
    "not_found": "missing", "unreachable": "missing", "timeout": "missing", "error": "missing",
    "too_large": "too_large", "refused": "refused",
}


@dataclass
class ImageRecord:
    """Outcome for one product.

    Attributes:
        status: One of :data:`IMAGE_STATUSES`.
        path: Stored file relative to ``image_dir`` (``None`` unless ``status == "ok"``).
        source_url: Candidate URL the image came from, or the one whose failure is reported.
        bytes: Size of the stored JPEG (``ok``) or of the undecodable download (``broken``).
        width: Width of the stored image in pixels (``ok``), or of an image over the pixel limit.
        height: Height, as ``width``.
        error: Failures of the candidate URLs tried before (``"; "``-joined); for an ``ok``
            product, those of the candidates before the one that worked, else ``None``.
        cached: ``True`` when a valid image was already present and nothing was fetched.
    """

    status: ImageStatus
    path: str | None = None
    source_url: str | None = None
    bytes: int = 0
    width: int | None = None
    height: int | None = None
    error: str | None = None
    cached: bool = False


@dataclass
class ImageManifest:
    """Per-product image statuses with counts, as written by :func:`write_manifest`.

    Attributes:
        records: ``product_id -> ImageRecord`` in input order.
    """

    records: dict[str, ImageRecord] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Number of products per status (every status present, zeros included)."""
        counts = dict.fromkeys(IMAGE_STATUSES, 0)
        for record in self.records.values():
            counts[record.status] += 1
        return counts

    @property
    def num_cached(self) -> int:
        """Number of ``ok`` products whose image was already present."""
        return sum(record.cached for record in self.records.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "counts": self.counts,
            "cached": self.num_cached,
            "products": {pid: asdict(record) for pid, record in self.records.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageManifest":
        if data.get("version") != MANIFEST_VERSION:
            raise ValueError(
                f"image manifest version {data.get('version')!r} is not supported; expected {MANIFEST_VERSION}")
        records = {}
        for pid, fields in data["products"].items():
            if fields.get("status") not in IMAGE_STATUSES:
                raise ValueError(f"product {pid!r} has status {fields.get('status')!r}; "
                                 f"accepted: {', '.join(IMAGE_STATUSES)}")
            records[pid] = ImageRecord(**fields)
        return cls(records=records)


def write_manifest(manifest: ImageManifest, path: Path) -> None:
    """Write ``manifest`` as JSON to ``path`` atomically (temp file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(manifest.to_dict(), out, indent=1, ensure_ascii=False)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_manifest(path: Path) -> ImageManifest:
    """Read a manifest written by :func:`write_manifest`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the version or a status is not recognised.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image manifest {path} does not exist")
    return ImageManifest.from_dict(json.loads(path.read_text(encoding="utf-8")))


class _Problem(Exception):
    def __init__(self, status: ImageStatus, message: str, *, width: int | None = None,
                 height: int | None = None) -> None:
        super().__init__(message)
        self.status: ImageStatus = status
        self.width = width
        self.height = height
        self.num_bytes = 0


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse images over ``max_pixels`` before any decoding."""
    try:
        image = Image.open(path, formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise _Problem("too_large", f"decompression bomb guard: {exc}") from exc
    except Exception as exc:  # PIL raises many types on hostile bytes; all mean "not an image"
        raise _Problem("broken", f"not a decodable image ({type(exc).__name__}: {exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise _Problem("too_large", f"{width}x{height} = {width * height} pixels > max_pixels={max_pixels}",
                       width=width, height=height)
    return image


def _verified(path: Path, max_pixels: int) -> Image.Image:
    """Structural check (``verify``), then a full decode of a fresh handle; returns it loaded."""
    with _open_checked(path, max_pixels) as probe:
        try:
            probe.verify()
        except Exception as exc:
            raise _Problem("broken", f"image failed verification ({type(exc).__name__}: {exc})") from exc
    image = _open_checked(path, max_pixels)
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        image.close()
        raise _Problem("too_large", f"decompression bomb guard: {exc}") from exc
    except Exception as exc:
        image.close()
        raise _Problem("broken", f"image failed to decode ({type(exc).__name__}: {exc})") from exc
    return image


def _store_as_jpeg(source: Path, final: Path, max_pixels: int) -> tuple[int, int]:
    """Verify ``source`` and atomically place it at ``final`` as an RGB JPEG; returns (width, height)."""
    image = _verified(source, max_pixels)
    with image:
        size = image.size
        if image.format == "JPEG" and image.mode == "RGB" and source.parent == final.parent:
            os.replace(source, final)  # already what we store: keep the original bytes
            return size
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            rgb = Image.new("RGB", rgba.size, (255, 255, 255))  # transparent product shots on white
            rgb.paste(rgba, mask=rgba.getchannel("A"))
        else:
            rgb = image.convert("RGB")
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            rgb.save(out, format="JPEG", quality=95)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


class _Network:
    """Shared across workers: stop trying http(s) after many consecutive unreachable hosts."""

    def __init__(self, unreachable_limit: int) -> None:
        self.limit = unreachable_limit
        self.consecutive_unreachable = 0
        self.lock = threading.Lock()

    @property
    def down(self) -> bool:
        return 0 < self.limit <= self.consecutive_unreachable

    def record(self, result: FetchResult) -> None:
        with self.lock:
            if result.status == "unreachable":
                self.consecutive_unreachable += 1
            elif result.http_status is not None or result.status == "ok":
                self.consecutive_unreachable = 0


@dataclass(frozen=True)
class _Options:
    image_dir: Path
    base_dir: Path | None
    max_bytes: int
    timeout_s: float
    retries: int
    backoff_s: float
    max_pixels: int


def _local_source_url(url: str, base_dir: Path | None) -> str:
    """Resolve a plain relative path to a ``file://`` URL, refusing anything leaving ``base_dir``."""
    if base_dir is None:
        raise _Problem("refused", f"relative image path {url!r} given but no base_dir to resolve it against")
    root = base_dir.resolve()
    target = (root / url).resolve()
    if not target.is_relative_to(root):
        raise _Problem("refused", f"image path {url!r} resolves to {target}, outside base_dir {root}")
    return target.as_uri()


def _fetch_candidate(url: str, staging: Path, final: Path, options: _Options, network: _Network) -> ImageRecord:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        if network.down:
            raise _Problem("missing", f"network unreachable; {url} skipped after "
                                      f"{network.consecutive_unreachable} consecutive failures")
        fetch_from = url
    elif scheme == "file":
        fetch_from = url
    elif scheme == "" and not Path(url).is_absolute():
        fetch_from = _local_source_url(url, options.base_dir)
    else:
        raise _Problem("refused", f"image source {url!r} (scheme {scheme!r}) is not accepted; "
                                  "accepted: http(s)://, file:// or a path relative to base_dir")
    result = fetch_url(fetch_from, staging, max_bytes=options.max_bytes, timeout_s=options.timeout_s,
                       retries=options.retries, backoff_s=options.backoff_s,
                       allow_file=scheme not in ("http", "https"))
    if scheme in ("http", "https"):
        network.record(result)
    if result.status != "ok":
        raise _Problem(_FETCH_TO_IMAGE[result.status], result.error or result.status)
    try:
        width, height = _store_as_jpeg(staging, final, options.max_pixels)
    except _Problem as problem:
        if problem.status == "broken":
            problem.num_bytes = result.num_bytes
        raise
    return ImageRecord(status="ok", path=final.name, source_url=url, bytes=final.stat().st_size,
                       width=width, height=height)


def _process(product_id: str, urls: Sequence[str], options: _Options, network: _Network) -> ImageRecord:
    try:
        name = safe_filename(product_id, ".jpg")
    except ValueError as exc:
        return ImageRecord(status="refused", error=str(exc))
    final = options.image_dir / name
    if final.parent != options.image_dir:  # safe_filename guarantees this; keep the invariant explicit
        raise AssertionError(f"{final} escapes {options.image_dir}")
    if final.is_file():
        try:
            with _verified(final, options.max_pixels) as image:
                return ImageRecord(status="ok", path=name, bytes=final.stat().st_size, width=image.width,
                                   height=image.height, cached=True)
        except _Problem:
            pass  # damaged or over the current limits: fetch again, the rename replaces it
    if not urls:
        return ImageRecord(status="missing", error="no image URL")
    staging = options.image_dir / f".{name}.download"
    worst: ImageRecord | None = None
    errors = []
    for url in urls:
        try:
            record = _fetch_candidate(url, staging, final, options, network)
            record.error = "; ".join(errors) or None  # earlier candidates that failed
            return record
        except _Problem as problem:
            errors.append(f"{url}: {problem}")
            record = ImageRecord(status=problem.status, source_url=url)
            record.bytes, record.width, record.height = problem.num_bytes, problem.width, problem.height
            if worst is None or _FAILURE_PRIORITY[record.status] > _FAILURE_PRIORITY[worst.status]:
                worst = record
        finally:
            staging.unlink(missing_ok=True)
    assert worst is not None
    worst.error = "; ".join(errors)
    return worst


def download_images(
    items: Sequence[tuple[str, Sequence[str]]],
    image_dir: Path,
    *,
    max_bytes: int = 10_000_000,
    timeout_s: float = 10,
    workers: int = 8,
    retries: int = 2,
    backoff_s: float = 0.5,
    max_pixels: int = 50_000_000,
    base_dir: Path | None = None,
    show_progress: bool = True,
    unreachable_limit: int = 32,
) -> ImageManifest:
    """Download, verify and store one image per product, concurrently and resumably.

    A product whose ``image_dir/safe_filename(id, ".jpg")`` already holds a valid image
    (within ``max_pixels``) is ``ok`` and ``cached`` without any fetch; failed products are
    tried again on the next run. Candidate URLs are tried in order until one gives a valid
    image. Each image is decoded in full (``verify`` then ``load``) after its header passed
    the pixel check, converted to RGB (transparency on white) and stored as JPEG; an
    RGB JPEG source keeps its original bytes.

    Args:
        items: ``(product_id, candidate_urls)`` pairs; a repeated product id keeps its first
            entry.
        image_dir: Output folder (created if missing).
        max_bytes: Size limit per downloaded file.
        timeout_s: Socket timeout per connect/read.
        workers: Number of download threads.
        retries: Extra attempts per URL on 5xx, timeouts and connection errors.
        backoff_s: Base of the exponential backoff between attempts.
        max_pixels: Largest accepted ``width * height``; checked from the header before any
            pixel is decoded. (PIL's own guard, ``Image.MAX_IMAGE_PIXELS``, also applies and
            is left untouched because it is process-wide.)
        base_dir: Folder against which plain relative paths are resolved; they may not leave it.
        show_progress: Show a tqdm progress bar.
        unreachable_limit: After this many consecutive ``unreachable`` http(s) fetches
            (no network), the remaining http(s) URLs are skipped as ``missing``; 0 never skips.

    Returns:
        An :class:`ImageManifest` with one record per distinct product id, in input order.

    Raises:
        ValueError: If a numeric limit is not positive (``retries``/``unreachable_limit``
            negative).
    """
    for name, value in (("max_bytes", max_bytes), ("timeout_s", timeout_s), ("workers", workers),
                        ("max_pixels", max_pixels)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if retries < 0 or backoff_s < 0 or unreachable_limit < 0:
        raise ValueError(f"retries, backoff_s and unreachable_limit must be >= 0, "
                         f"got {retries}, {backoff_s}, {unreachable_limit}")
    image_dir = Path(image_dir).resolve()
    image_dir.mkdir(parents=True, exist_ok=True)
    options = _Options(image_dir=image_dir, base_dir=None if base_dir is None else Path(base_dir),
                       max_bytes=max_bytes, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                       max_pixels=max_pixels)
    network = _Network(unreachable_limit)
    unique: dict[str, Sequence[str]] = {}
    for product_id, urls in items:
        unique.setdefault(product_id, urls)
    records: dict[str, ImageRecord] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
        total=len(unique), desc="images", unit="img", disable=not show_progress
    ) as progress:
        futures = {pool.submit(_process, pid, list(urls), options, network): pid for pid, urls in unique.items()}
        for future in as_completed(futures):
            records[futures[future]] = future.result()
            progress.update(1)
    return ImageManifest(records={pid: records[pid] for pid in unique})
