import io
import json
from pathlib import Path

import pytest
from PIL import Image

from rcml_graph.data.download import safe_filename
from rcml_graph.data.images import ImageManifest, ImageRecord, download_images, load_manifest, write_manifest

try:
    from tests.data.http_fixture import Route, closed_port_url, http_server, jpeg_bytes, png_bomb, png_bytes  # noqa: F401
except ImportError:  # pytest's default rootdir-less import mode puts tests/data itself on sys.path
    from http_fixture import Route, closed_port_url, http_server, jpeg_bytes, png_bomb, png_bytes  # noqa: F401

GOOD = jpeg_bytes(8, 6)
FAST = dict(timeout_s=0.3, retries=1, backoff_s=0.01, workers=4, show_progress=False)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb(20_000)


def _transparent_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 3), (0, 0, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix in (".part", ".download"))


def _serve_all(server, bomb: bytes) -> list[tuple[str, list[str]]]:
    server.routes.update({
        "/good.jpg": Route(body=GOOD, content_type="image/jpeg"),
        "/clear.png": Route(body=_transparent_png(), content_type="image/png"),
        "/slow.jpg": Route(body=GOOD, content_type="image/jpeg", delay_s=5),
        "/broken.jpg": Route(body=b"\xff\xd8\xff this is not a jpeg at all" * 10, content_type="image/jpeg"),
        "/big.jpg": Route(body=b"\0" * 300_000, content_type="image/jpeg"),
        "/big-nolen.jpg": Route(body=b"\0" * 300_000, content_type="image/jpeg", send_length=False),
        "/moved.jpg": Route(status=302, headers={"Location": "/good.jpg"}),
        "/to-file.jpg": Route(status=302, headers={"Location": "file:///etc/passwd"}),
        "/flaky.jpg": Route(body=GOOD, content_type="image/jpeg", fail_first=1),
        "/bomb.png": Route(body=bomb, content_type="image/png"),
    })
    u = server.url
    return [
        ("GOOD", [u("/good.jpg")]),
        ("CLEAR", [u("/clear.png")]),
        ("SLOW", [u("/slow.jpg")]),
        ("BROKEN", [u("/broken.jpg")]),
        ("BIG", [u("/big.jpg")]),
        ("BIGNOLEN", [u("/big-nolen.jpg")]),
        ("MOVED", [u("/moved.jpg")]),
        ("TOFILE", [u("/to-file.jpg")]),
        ("GONE", [u("/gone.jpg")]),
        ("FLAKY", [u("/flaky.jpg")]),
        ("BOMB", [u("/bomb.png")]),
        ("NOURL", []),
        ("FTP", ["ftp://127.0.0.1/x.jpg"]),
        ("OFFLINE", [closed_port_url()]),
        ("FALLBACK", [u("/gone2.jpg"), u("/good.jpg")]),
        ("../../escape", [u("/good.jpg")]),
    ]


EXPECTED = {
    "GOOD": "ok", "CLEAR": "ok", "SLOW": "missing", "BROKEN": "broken", "BIG": "too_large",
    "BIGNOLEN": "too_large", "MOVED": "ok", "TOFILE": "refused", "GONE": "missing", "FLAKY": "ok",
    "BOMB": "too_large", "NOURL": "missing", "FTP": "refused", "OFFLINE": "missing", "FALLBACK": "ok",
    "../../escape": "ok",
}


def test_statuses_against_local_server_and_resume(http_server, tmp_path, bomb):
    assert len(bomb) < 200_000  # the bomb is small on the wire: only the pixel guard can stop it
    items = _serve_all(http_server, bomb)
    image_dir = tmp_path / "images"
    manifest = download_images(items, image_dir, max_bytes=200_000, **FAST)

    assert {pid: r.status for pid, r in manifest.records.items()} == EXPECTED
    assert list(manifest.records) == [pid for pid, _ in items]  # input order
    assert manifest.counts == {"ok": 6, "missing": 4, "broken": 1, "too_large": 3, "refused": 2}
    assert manifest.num_cached == 0
    records = manifest.records

    # The stored RGB JPEG keeps the original bytes; the PNG is flattened on white.
    assert (image_dir / "GOOD.jpg").read_bytes() == GOOD
    assert (records["GOOD"].path, records["GOOD"].width, records["GOOD"].height) == ("GOOD.jpg", 8, 6)
    assert records["GOOD"].bytes == len(GOOD)
    with Image.open(image_dir / "CLEAR.jpg") as clear:
        assert (clear.format, clear.mode, clear.size) == ("JPEG", "RGB", (4, 3))
        assert min(clear.getpixel((1, 1))) >= 250
    assert records["MOVED"].source_url == http_server.url("/moved.jpg")
    assert records["FALLBACK"].source_url == http_server.url("/good.jpg") and "404" in records["FALLBACK"].error
    assert http_server.hits["/flaky.jpg"] == 2 and http_server.hits["/gone.jpg"] == 1
    assert records["BROKEN"].bytes == len(http_server.routes["/broken.jpg"].body)
    assert "decompression bomb" in records["BOMB"].error
    assert "'ftp'" in records["FTP"].error and "'file'" in records["TOFILE"].error
    for pid, status in EXPECTED.items():
        assert (records[pid].path is not None) == (status == "ok")

    # Traversal ids stay inside image_dir; nothing partial or hidden is left anywhere.
    escaped = records["../../escape"].path
    assert escaped == safe_filename("../../escape", ".jpg") and (image_dir / escaped).parent == image_dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
    assert _hidden(image_dir) == []
    stored = {r.path for r in records.values() if r.path}
    assert sorted(p.name for p in image_dir.iterdir()) == sorted(stored)

    # Rerun: valid files are skipped (no request), failures are tried again.
    good_hits, gone_hits = http_server.hits["/good.jpg"], http_server.hits["/gone.jpg"]
    again = download_images(items, image_dir, max_bytes=200_000, **FAST)
    assert {pid: r.status for pid, r in again.records.items()} == EXPECTED
    assert again.num_cached == 6
    assert http_server.hits["/good.jpg"] == good_hits and http_server.hits["/gone.jpg"] == gone_hits + 1

    # A damaged cached file is fetched again rather than trusted.
    (image_dir / "GOOD.jpg").write_bytes(b"garbage")
    third = download_images([("GOOD", [http_server.url("/good.jpg")])], image_dir, max_bytes=200_000, **FAST)
    assert (third.records["GOOD"].status, third.records["GOOD"].cached) == ("ok", False)
    assert (image_dir / "GOOD.jpg").read_bytes() == GOOD


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "wide.jpg").write_bytes(jpeg_bytes(100, 60))
    manifest = download_images([("WIDE", ["wide.jpg"])], tmp_path / "out", base_dir=src, max_pixels=5_999,
                               show_progress=False)
    record = manifest.records["WIDE"]
    assert (record.status, record.width, record.height) == ("too_large", 100, 60)
    assert "6000 pixels > max_pixels=5999" in record.error
    assert list((tmp_path / "out").iterdir()) == []
    ok = download_images([("WIDE", ["wide.jpg"])], tmp_path / "out", base_dir=src, max_pixels=6_000,
                         show_progress=False)
    assert ok.records["WIDE"].status == "ok"


def test_local_paths_resolve_inside_base_dir_only(tmp_path):
    base = tmp_path / "demo"
    (base / "images").mkdir(parents=True)
    (base / "images" / "B01.jpg").write_bytes(GOOD)
    (tmp_path / "secret.jpg").write_bytes(GOOD)
    (base / "images" / "B04.png").write_bytes(png_bytes(5, 4, "L"))
    items = [
        ("B01", ["images/B01.jpg"]),
        ("B02", ["../secret.jpg"]),
        ("B03", [str(tmp_path / "secret.jpg")]),  # absolute plain path: not a relative path, not a URL
        ("B04", ["images/B04.png"]),
        ("B05", ["images/absent.jpg"]),
        ("B06", [(tmp_path / "secret.jpg").as_uri()]),  # explicit file:// mirror is allowed
    ]
    out = tmp_path / "out"
    manifest = download_images(items, out, base_dir=base, show_progress=False)
    statuses = {pid: r.status for pid, r in manifest.records.items()}
    assert statuses == {"B01": "ok", "B02": "refused", "B03": "refused", "B04": "ok", "B05": "missing", "B06": "ok"}
    assert "outside base_dir" in manifest.records["B02"].error
    with Image.open(out / "B04.jpg") as gray:
        assert (gray.mode, gray.size) == ("RGB", (5, 4))
    no_base = download_images([("B01", ["images/B01.jpg"])], tmp_path / "out2", show_progress=False)
    assert no_base.records["B01"].status == "refused" and "no base_dir" in no_base.records["B01"].error


def test_no_network_counts_missing_and_stops_trying(tmp_path):
    items = [(f"P{i}", [closed_port_url(f"/{i}.jpg")]) for i in range(5)]
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "P0.jpg").write_bytes(GOOD)  # cached: still usable offline
    manifest = download_images(items, tmp_path / "images", timeout_s=0.5, retries=0, workers=1,
                               unreachable_limit=2, show_progress=False)
    assert manifest.counts == {"ok": 1, "missing": 4, "broken": 0, "too_large": 0, "refused": 0}
    assert manifest.num_cached == 1
    errors = [manifest.records[f"P{i}"].error for i in range(1, 5)]
    assert ["skipped after 2" in e for e in errors] == [False, False, True, True]


def test_manifest_round_trip_and_validation(tmp_path):
    manifest = ImageManifest(records={
        "A": ImageRecord(status="ok", path="A.jpg", source_url="http://x/a.jpg", bytes=10, width=2, height=3),
        "B/é": ImageRecord(status="missing", error="HTTP 404"),
    })
    path = tmp_path / "sub" / "manifest.json"
    write_manifest(manifest, path)
    assert load_manifest(path) == manifest
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["counts"] == {"ok": 1, "missing": 1, "broken": 0, "too_large": 0, "refused": 0}
    assert data["products"]["B/é"]["error"] == "HTTP 404"
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.json"]

    data["products"]["A"]["status"] = "fine"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="status 'fine'"):
        load_manifest(path)
    with pytest.raises(FileNotFoundError, match="absent.json"):
        load_manifest(tmp_path / "absent.json")


@pytest.mark.parametrize("bad", [dict(max_bytes=0), dict(workers=0), dict(max_pixels=-1), dict(retries=-1)])
def test_download_images_rejects_bad_limits(tmp_path, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        download_images([], tmp_path, show_progress=False, **bad)
