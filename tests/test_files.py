import os
from pathlib import Path

import pytest

from darts_tf.files import atomic_directory, atomic_file


def test_atomic_file_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "config.json"
    with atomic_file(target) as handle:
        handle.write("first")
        assert not target.exists()  # nothing at the path until the block ends
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "first" and os.listdir(target.parent) == ["config.json"]  # no temporary left
    with atomic_file(tmp_path / "a.bin", "wb") as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="expected mode 'w' or 'wb'. Received: mode='a'"), atomic_file(target, "a"):
        pass


def test_atomic_directory_replaces_the_folder_only_when_complete(tmp_path):
    target = tmp_path / "checkpoint"
    with atomic_directory(target) as tmp:
        (open(os.path.join(tmp, "state.json"), "w")).close()
    assert os.listdir(target) == ["state.json"]
    with pytest.raises(KeyboardInterrupt), atomic_directory(target) as tmp:
        open(os.path.join(tmp, "other"), "w").close()
        raise KeyboardInterrupt
    assert os.listdir(target) == ["state.json"] and os.listdir(tmp_path) == ["checkpoint"]
    with atomic_directory(target) as tmp:
        open(os.path.join(tmp, "new"), "w").close()
    assert os.listdir(target) == ["new"] and os.listdir(tmp_path) == ["checkpoint"]


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    """Readable by others as open()/makedirs() would make them (a model server often runs as another user)."""
    import stat

    from darts_tf.files import _umask

    with atomic_file(tmp_path / "f.txt") as handle:
        handle.write("x")
    with atomic_directory(tmp_path / "d") as folder:
        (Path(folder) / "inside").write_text("y")
    mask = _umask()
    assert stat.S_IMODE(os.stat(tmp_path / "f.txt").st_mode) == 0o666 & ~mask
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o777 & ~mask
