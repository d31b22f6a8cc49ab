"""Atomic writes: a finished block puts the file in place with a plain open()'s mode; a failed one
leaves the old file (or none) and no temporary behind. Hashes against hashlib."""

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rcml_graph.io_utils import atomic_open, atomic_path, atomic_write_text, sha256_file, sha256_json


def _plain_mode(tmp_path: Path) -> int:
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    return stat.S_IMODE(plain.stat().st_mode)


def test_atomic_open_writes_in_place_with_a_plain_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.bin"  # the folder is created
    with atomic_open(target) as handle:
        handle.write(b"abc")
        assert not target.exists()  # nothing under the final name until the block ends
    assert target.read_bytes() == b"abc"
    assert stat.S_IMODE(target.stat().st_mode) == _plain_mode(tmp_path)
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]


@pytest.mark.parametrize("existing", [None, b"old"])
def test_a_failed_block_keeps_the_old_file_and_no_temporary(tmp_path: Path, existing: bytes | None) -> None:
    target = tmp_path / "a.json"
    if existing is not None:
        target.write_bytes(existing)
    with pytest.raises(RuntimeError, match="crash"), atomic_open(target) as handle:
        handle.write(b"half")
        raise RuntimeError("crash")
    assert (target.read_bytes() if target.exists() else None) == existing
    assert [p.name for p in tmp_path.iterdir()] == ([] if existing is None else ["a.json"])


def test_atomic_path_for_writers_that_want_a_name(tmp_path: Path) -> None:
    target = tmp_path / "t.npy"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"x" * 10)
    assert target.read_bytes() == b"x" * 10
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"y")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"x" * 10 and len(list(tmp_path.iterdir())) == 1


def test_json_is_utf8_whatever_the_locale(tmp_path: Path) -> None:
    # An ASCII locale with Python's UTF-8 mode and locale coercion off: a plain text open() would
    # write ASCII and fail on the first non-ASCII relation description.
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    code = ("import locale, sys; from rcml_graph.io_utils import atomic_write_json; "
            "print(locale.getpreferredencoding(False)); "
            "atomic_write_json(sys.argv[1], {'relation': 'gekauft von Leuten, die Angeln m\\u00f6gen'})")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.json")], env=env, capture_output=True,
                         text=True, check=True)
    if "utf" in out.stdout.lower():
        pytest.skip(f"this system's C locale is already {out.stdout.strip()}: no ASCII locale to test against")
    raw = (tmp_path / "r.json").read_bytes()
    assert "mögen".encode() in raw
    assert json.loads(raw.decode("utf-8")) == {"relation": "gekauft von Leuten, die Angeln mögen"}


def test_text_has_unix_line_ends(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "t.md", "a\nb\n")
    assert (tmp_path / "t.md").read_bytes() == b"a\nb\n"


def test_hashes(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 + 7)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk_size=1024) == hashlib.sha256(data).hexdigest()
    assert sha256_json({"a": 1, "b": [2, 3]}) == sha256_json({"b": [2, 3], "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})
