"""`atomic_folder`: a folder appears whole or not at all, and replaces an old one only whole."""

import pytest

from t1.atomic import atomic_folder


def test_a_folder_appears_whole_and_replaces_the_old_one(tmp_path):
    out = tmp_path / "out"
    with atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("first")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "first"
    with atomic_folder(out) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left beside it


def test_an_error_keeps_the_old_folder_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("kept")
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as tmp:
            (tmp / "half.txt").write_text("cut")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
