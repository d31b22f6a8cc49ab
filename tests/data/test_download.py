import gzip
import hashlib
import time
from pathlib import Path

import pytest

from rcml_graph.data.download import (
    amazon_file_url,
    check_url,
    download_amazon_files,
    fetch_url,
    is_valid_gzip,
    safe_filename,
)

try:
    from tests.data.http_fixture import Route, closed_port_url, http_server  # noqa: F401 (fixture)
except ImportError:  # pytest's default rootdir-less import mode puts tests/data itself on sys.path
    from http_fixture import Route, closed_port_url, http_server  # noqa: F401


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part")


def _sha16(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- safe_filename ---------------------------------------------------------------------------


def test_safe_filename_keeps_plain_ids():
    assert safe_filename("B00ABC1234", ".jpg") == "B00ABC1234.jpg"
    assert safe_filename("0-7.x_y") == "0-7.x_y"


@pytest.mark.parametrize(
    "product_id, expected_stem",
    [
        ("../../etc/passwd", "_.._etc_passwd"),  # '../../' -> '.._.._' -> leading dots dropped
        ("a/b", "a_b"),
        ("..", "id"),
        (".hidden", "hidden"),
        ("café☕", "caf__"),
        ("x\x00y\n", "x_y_"),
        ("CON", "CON"),  # a Windows device name is escaped even though its characters are plain
    ],
)
def test_safe_filename_escapes_with_stable_hash(product_id, expected_stem):
    name = safe_filename(product_id, ".jpg")
    assert name == f"{expected_stem}-{_sha16(product_id)}.jpg"
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert all(32 < ord(c) < 127 for c in name)
    assert Path("/images", name).parent == Path("/images")


def test_safe_filename_distinct_ids_stay_distinct_and_length_is_capped():
    assert safe_filename("a/b") != safe_filename("a_b") != safe_filename("a:b")
    long_name = safe_filename("x" * 1000, ".jpg")
    assert long_name == "x" * 100 + "-" + _sha16("x" * 1000) + ".jpg"
    assert safe_filename("y" * 120) == "y" * 120  # exactly at the plain-name cap


@pytest.mark.parametrize("bad_id, bad_suffix", [("", ".jpg"), (None, ".jpg"), ("a", "jpg"), ("a", "./x"), ("a", ".j/g")])
def test_safe_filename_rejects_bad_input(bad_id, bad_suffix):
    with pytest.raises(ValueError, match="product id|suffix"):
        safe_filename(bad_id, bad_suffix)


# --- check_url / refusals ----------------------------------------------------------------------


def test_check_url_accepts_only_http_https_unless_file_allowed():
    assert check_url("https://example.org/a.jpg") == "https"
    assert check_url("file:///tmp/a.jpg", allow_file=True) == "file"
    for bad in ("ftp://example.org/a", "file:///etc/passwd", "javascript:alert(1)", "http:///no-host", "/etc/passwd"):
        with pytest.raises(ValueError, match="not allowed|no host"):
            check_url(bad)


def test_fetch_refuses_bad_scheme_without_touching_disk(tmp_path):
    result = fetch_url("file:///etc/hostname", tmp_path / "out", max_bytes=100, timeout_s=1)
    assert result.status == "refused" and "accepted: http, https" in result.error
    assert list(tmp_path.iterdir()) == []


# --- fetch_url against the local server --------------------------------------------------------


def test_fetch_good_file_is_written_atomically(http_server, tmp_path):
    http_server.routes["/a.bin"] = Route(body=b"x" * 1000)
    dest = tmp_path / "a.bin"
    result = fetch_url(http_server.url("/a.bin"), dest, max_bytes=1000, timeout_s=2)
    assert (result.status, result.num_bytes, result.attempts, result.http_status) == ("ok", 1000, 1, 200)
    assert dest.read_bytes() == b"x" * 1000
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("send_length", [True, False])
def test_fetch_oversized_body_is_refused_and_leaves_nothing(http_server, tmp_path, send_length):
    http_server.routes["/big"] = Route(body=b"z" * 50_000, send_length=send_length)
    dest = tmp_path / "big"
    result = fetch_url(http_server.url("/big"), dest, max_bytes=49_999, timeout_s=2, backoff_s=0)
    assert result.status == "too_large" and result.attempts == 1
    assert http_server.hits["/big"] == 1  # a size refusal is final, not retried
    assert list(tmp_path.iterdir()) == []


def test_failed_fetch_keeps_previous_complete_file(http_server, tmp_path):
    dest = tmp_path / "keep.bin"
    dest.write_bytes(b"old complete file")
    http_server.routes["/big"] = Route(body=b"z" * 5000, send_length=False)
    assert fetch_url(http_server.url("/big"), dest, max_bytes=100, timeout_s=2).status == "too_large"
    assert dest.read_bytes() == b"old complete file"
    assert _leftovers(tmp_path) == []


def test_fetch_404_is_not_retried(http_server, tmp_path):
    result = fetch_url(http_server.url("/nope"), tmp_path / "n", max_bytes=100, timeout_s=2, retries=3, backoff_s=0)
    assert (result.status, result.http_status, result.attempts) == ("not_found", 404, 1)
    assert http_server.hits["/nope"] == 1


def test_fetch_retries_500_then_succeeds(http_server, tmp_path):
    http_server.routes["/flaky"] = Route(body=b"done", fail_first=2)
    result = fetch_url(http_server.url("/flaky"), tmp_path / "f", max_bytes=100, timeout_s=2, retries=3, backoff_s=0.01)
    assert (result.status, result.attempts) == ("ok", 3)
    assert http_server.hits["/flaky"] == 3
    assert (tmp_path / "f").read_bytes() == b"done"


def test_fetch_gives_up_after_retries(http_server, tmp_path):
    http_server.routes["/down"] = Route(fail_first=100)
    result = fetch_url(http_server.url("/down"), tmp_path / "d", max_bytes=100, timeout_s=2, retries=2, backoff_s=0.01)
    assert (result.status, result.http_status, result.attempts) == ("error", 500, 3)
    assert http_server.hits["/down"] == 3


def test_fetch_follows_redirect_and_rechecks_scheme(http_server, tmp_path):
    http_server.routes["/good"] = Route(body=b"payload")
    http_server.routes["/moved"] = Route(status=302, headers={"Location": "/good"})
    http_server.routes["/to-file"] = Route(status=302, headers={"Location": "file:///etc/passwd"})
    http_server.routes["/loop"] = Route(status=301, headers={"Location": "/loop"})

    moved = fetch_url(http_server.url("/moved"), tmp_path / "m", max_bytes=100, timeout_s=2)
    assert (moved.status, moved.final_url) == ("ok", http_server.url("/good"))
    assert (tmp_path / "m").read_bytes() == b"payload"

    to_file = fetch_url(http_server.url("/to-file"), tmp_path / "t", max_bytes=100, timeout_s=2, allow_file=True)
    assert to_file.status == "refused" and "'file'" in to_file.error
    loop = fetch_url(http_server.url("/loop"), tmp_path / "l", max_bytes=100, timeout_s=2)
    assert loop.status == "refused" and "redirects" in loop.error
    assert http_server.hits["/loop"] == 6  # 1 + MAX_REDIRECTS (5), then it stops
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_fetch_times_out_on_slow_server(http_server, tmp_path):
    http_server.routes["/slow"] = Route(body=b"late", delay_s=5)
    start = time.monotonic()
    result = fetch_url(http_server.url("/slow"), tmp_path / "s", max_bytes=100, timeout_s=0.3, retries=1, backoff_s=0.01)
    elapsed = time.monotonic() - start
    assert (result.status, result.attempts) == ("timeout", 2)
    assert elapsed < 2.0
    assert list(tmp_path.iterdir()) == []


def test_fetch_overall_deadline_caps_retries(http_server, tmp_path):
    http_server.routes["/slow"] = Route(body=b"late", delay_s=5)
    start = time.monotonic()
    result = fetch_url(http_server.url("/slow"), tmp_path / "s", max_bytes=100, timeout_s=0.3, retries=10,
                       backoff_s=0.01, deadline_s=0.5)
    assert result.status == "timeout" and result.attempts <= 2
    assert time.monotonic() - start < 1.5


def test_fetch_unreachable_host(tmp_path):
    result = fetch_url(closed_port_url(), tmp_path / "u", max_bytes=100, timeout_s=1, retries=1, backoff_s=0.01)
    assert (result.status, result.attempts) == ("unreachable", 2)


def test_fetch_file_url_when_allowed(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc" * 10)
    out = tmp_path / "out"
    out.mkdir()
    ok = fetch_url(src.as_uri(), out / "copy", max_bytes=30, timeout_s=1, allow_file=True)
    assert ok.status == "ok" and (out / "copy").read_bytes() == b"abc" * 10
    big = fetch_url(src.as_uri(), out / "big", max_bytes=29, timeout_s=1, allow_file=True)
    assert big.status == "too_large"
    gone = fetch_url((tmp_path / "absent").as_uri(), out / "x", max_bytes=30, timeout_s=1, allow_file=True)
    assert gone.status == "not_found"
    assert sorted(p.name for p in out.iterdir()) == ["copy"]


@pytest.mark.parametrize("bad", [dict(max_bytes=0), dict(timeout_s=0), dict(retries=-1)])
def test_fetch_rejects_bad_limits(tmp_path, bad):
    kwargs = dict(max_bytes=10, timeout_s=1, retries=0) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        fetch_url("http://127.0.0.1/x", tmp_path / "x", **kwargs)


# --- Amazon files -------------------------------------------------------------------------------


def test_amazon_file_urls_are_the_official_locations():
    assert amazon_file_url("2018", "Magazine_Subscriptions") == (
        "https://jmcauley.ucsd.edu/data/amazon_v2/metaFiles2/meta_Magazine_Subscriptions.json.gz")
    assert amazon_file_url("2014", "Baby") == (
        "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_Baby.json.gz")
    assert amazon_file_url("2023", "All_Beauty") == (
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/meta_categories/meta_All_Beauty.jsonl.gz")
    assert amazon_file_url("2018", "Baby", base_url="http://mirror:8/x/") == "http://mirror:8/x/meta_Baby.json.gz"
    with pytest.raises(ValueError, match="'2019'.*2014, 2018, 2023"):
        amazon_file_url("2019", "Baby")
    with pytest.raises(ValueError, match="category '../Baby'"):
        amazon_file_url("2018", "../Baby")
    with pytest.raises(ValueError, match="kind 'images'"):
        amazon_file_url("2018", "Baby", "images")


def test_download_amazon_files_is_resumable(http_server, tmp_path):
    payload = gzip.compress(b'{"asin": "B001", "title": "t"}\n' * 50)
    path = "/mirror/meta_Magazine_Subscriptions.json.gz"
    http_server.routes[path] = Route(body=payload, content_type="application/gzip")
    out_dir = tmp_path / "amazon"

    (first,) = download_amazon_files("2018", "Magazine_Subscriptions", out_dir, base_url=http_server.url("/mirror"))
    dest = out_dir / "meta_Magazine_Subscriptions.json.gz"
    assert (first.status, first.path, first.num_bytes) == ("ok", dest, len(payload))
    assert dest.read_bytes() == payload and is_valid_gzip(dest)

    (again,) = download_amazon_files("2018", "Magazine_Subscriptions", out_dir, base_url=http_server.url("/mirror"))
    assert again.status == "cached" and http_server.hits[path] == 1  # no second request

    dest.write_bytes(payload[: len(payload) // 2])  # damaged after the fact: fetched again
    assert not is_valid_gzip(dest)
    (repaired,) = download_amazon_files("2018", "Magazine_Subscriptions", out_dir, base_url=http_server.url("/mirror"))
    assert repaired.status == "ok" and http_server.hits[path] == 2 and dest.read_bytes() == payload
    assert _leftovers(out_dir) == []


def test_download_amazon_files_rejects_truncated_or_oversized(http_server, tmp_path):
    payload = gzip.compress(b"x" * 10_000)
    http_server.routes["/m/meta_Baby.json.gz"] = Route(body=payload[:-20])
    http_server.routes["/m/meta_Beauty.json.gz"] = Route(body=payload)
    (cut,) = download_amazon_files("2014", "Baby", tmp_path, base_url=http_server.url("/m"), backoff_s=0)
    assert cut.status == "error" and "complete gzip" in cut.error
    (big,) = download_amazon_files("2014", "Beauty", tmp_path, base_url=http_server.url("/m"),
                                   max_bytes=len(payload) - 1, backoff_s=0)
    assert big.status == "too_large"
    assert list(tmp_path.iterdir()) == []


def test_download_amazon_files_without_network_reports_unreachable(tmp_path):
    base = closed_port_url("/m")
    (result,) = download_amazon_files("2023", "All_Beauty", tmp_path, base_url=base, retries=0, timeout_s=1)
    assert result.status == "unreachable" and not result.ok
