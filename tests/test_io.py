import json
import os

import pytest

from hf_slim.io import atomic_directory, write_json_atomic


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (open(os.path.join(tmp, "a.txt"), "w")).write("first")
    assert (target / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (open(os.path.join(tmp, "a.txt"), "w")).write("half-written")
            raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["model"]

    with atomic_directory(target) as tmp:
        (open(os.path.join(tmp, "b.txt"), "w")).write("second")
    assert sorted(os.listdir(target)) == ["b.txt"]
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_atomic_directory_refuses_to_overwrite_when_asked(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic_directory(tmp_path / "model", overwrite=False):
            pass


def test_write_json_atomic(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_json_atomic(path, {"accuracy": 0.5})
    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    assert sorted(os.listdir(path.parent)) == ["results.json"]
