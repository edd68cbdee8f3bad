"""storage: one set of file operations for local folders, fsspec stores (memory://) and TF's ram://."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from petseg.components.core.errors import PetsegError
from petseg.components.store import storage


@pytest.fixture(params=["local", "memory", "ram"])
def root(request, tmp_path) -> str:
    """An empty folder on each backend: a local path, fsspec's memory://, TensorFlow's ram://."""
    if request.param == "local":
        return str(tmp_path / "root")
    return f"{request.param}://petseg-test-{uuid.uuid4().hex[:8]}"


def make_tree(root: str) -> None:
    storage.write_text_atomically(storage.join(root, "a.txt"), "alpha")
    storage.write_bytes_atomically(storage.join(root, "sub/b.bin"), b"\x00\x01\x02")
    storage.write_text_atomically(storage.join(root, "sub/deeper/c.txt"), "gamma")


def test_the_same_operations_work_on_every_backend(root, tmp_path):
    make_tree(root)
    assert storage.exists(storage.join(root, "a.txt")) and storage.isdir(storage.join(root, "sub"))
    assert storage.isfile(storage.join(root, "a.txt")) and not storage.isfile(storage.join(root, "sub"))
    assert storage.listdir(root) == ["a.txt", "sub"]
    assert storage.listdir(storage.join(root, "sub")) == ["b.bin", "deeper"]
    assert storage.walk_files(root) == ["a.txt", "sub/b.bin", "sub/deeper/c.txt"]
    assert storage.read_text(storage.join(root, "sub/deeper/c.txt")) == "gamma"
    assert storage.read_bytes(storage.join(root, "sub/b.bin")) == b"\x00\x01\x02"
    with storage.open_file(storage.join(root, "a.txt")) as fh:
        assert fh.read() == "alpha"

    storage.write_text_atomically(storage.join(root, "a.txt"), "replaced")
    assert storage.read_text(storage.join(root, "a.txt")) == "replaced"
    assert storage.walk_files(root) == ["a.txt", "sub/b.bin", "sub/deeper/c.txt"]  # no temporary left

    storage.remove_file(storage.join(root, "a.txt"))
    assert not storage.exists(storage.join(root, "a.txt"))
    storage.remove_tree(storage.join(root, "sub"))
    assert not storage.exists(storage.join(root, "sub"))
    storage.remove_tree(storage.join(root, "sub"))  # removing what is not there is a no-op
    storage.remove_file(storage.join(root, "a.txt"))


def test_missing_things_are_reported(root):
    assert not storage.exists(storage.join(root, "nothing"))
    assert storage.walk_files(storage.join(root, "nothing")) == []
    with pytest.raises(Exception) as raised:
        storage.read_bytes(storage.join(root, "nothing.txt"))
    assert isinstance(raised.value, OSError) or type(raised.value).__name__ == "NotFoundError"


@pytest.mark.parametrize(
    "src_kind,dst_kind",
    [("local", "memory"), ("memory", "local"), ("memory", "memory"), ("local", "ram"), ("ram", "memory")],
)
def test_copy_tree_between_backends_copies_every_file_and_the_named_one_last(src_kind, dst_kind, tmp_path, monkeypatch):
    def place(kind: str, name: str) -> str:
        return str(tmp_path / name) if kind == "local" else f"{kind}://petseg-copy-{uuid.uuid4().hex[:8]}/{name}"

    src, dst = place(src_kind, "src"), place(dst_kind, "dst")
    make_tree(src)
    order: list[str] = []
    real_copy = storage.copy_file
    monkeypatch.setattr(storage, "copy_file", lambda a, b: (order.append(b), real_copy(a, b)))
    storage.copy_tree(src, dst, last="sub/b.bin")
    assert storage.walk_files(dst) == ["a.txt", "sub/b.bin", "sub/deeper/c.txt"]
    assert order[-1] == storage.join(dst, "sub/b.bin")
    assert storage.read_text(storage.join(dst, "sub/deeper/c.txt")) == "gamma"
    assert storage.read_bytes(storage.join(dst, "sub/b.bin")) == b"\x00\x01\x02"


def test_local_copy_of_a_store_is_a_temporary_local_folder(tmp_path):
    store = f"memory://petseg-lc-{uuid.uuid4().hex[:8]}/model"
    make_tree(store)
    with storage.local_copy(store) as local:
        assert os.path.isdir(local) and not storage.is_uri(local)
        assert (Path(local) / "sub/deeper/c.txt").read_text() == "gamma"
    assert not os.path.exists(local)
    with storage.local_copy(str(tmp_path)) as same:  # a local folder is used in place, not copied
        assert same == str(tmp_path)
    assert tmp_path.is_dir()


def test_local_workdir_is_beside_a_local_target_and_temporary_for_a_store(tmp_path):
    with storage.local_workdir(str(tmp_path / "models" / "petseg" / "3")) as work:
        assert work == str(tmp_path / "models" / "petseg") and os.path.isdir(work)
    with storage.local_workdir("memory://bucket/models/petseg/3") as work:
        assert os.path.isdir(work)
    assert not os.path.exists(work)


def test_local_atomic_write_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "models.config"
    storage.write_text_atomically(str(path), "old")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        storage.write_text_atomically(str(path), "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["models.config"]


def test_rename_dir_is_local_only_and_never_overwrites(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(FileExistsError):
        storage.rename_dir(str(tmp_path / "a"), str(tmp_path / "b"))
    storage.rename_dir(str(tmp_path / "a"), str(tmp_path / "c"))
    assert sorted(os.listdir(tmp_path)) == ["b", "c"]
    with pytest.raises(ValueError, match="cannot rename folders on an object store"):
        storage.rename_dir("s3://bucket/a", "s3://bucket/b")
    assert storage.supports_rename(str(tmp_path)) and not storage.supports_rename("gs://bucket/models")


def test_unknown_scheme_and_missing_extra_are_one_line_errors(monkeypatch):
    with pytest.raises(PetsegError, match=r"unknown URI scheme 'nosuch://'"):
        storage.exists("nosuch://bucket/models")
    import fsspec

    def no_library(protocol, **kwargs):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec, "filesystem", no_library)
    with pytest.raises(PetsegError, match=r"s3:// file system is not installed; pip install 'petseg\[s3\]'"):
        storage.exists("s3://bucket/models")
    with pytest.raises(PetsegError, match=r"pip install 'petseg\[gcs\]'"):
        storage.listdir("gs://bucket/models")


def test_open_file_refuses_other_modes(tmp_path):
    with pytest.raises(ValueError, match="unsupported mode 'a'"):
        storage.open_file(str(tmp_path / "x"), "a")


segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)


@given(
    head=st.sampled_from(["s3://bucket", "gs://bucket/base", "/abs/dir", "rel/dir", "memory://m"]),
    parts=st.lists(segment, min_size=1, max_size=4),
)
def test_join_parent_and_basename_agree(head, parts):
    path = storage.join(head, *parts)
    assert path == head + "/" + "/".join(parts)
    assert storage.basename(path) == parts[-1]
    assert storage.parent(path) == storage.join(head, *parts[:-1])
    assert storage.scheme(path) == (head.split("://")[0] if "://" in head else "")


@given(data=st.binary(max_size=4096), name=segment)
def test_bytes_written_to_memory_read_back_unchanged(data, name):
    path = f"memory://petseg-prop/{uuid.uuid4().hex[:8]}/{name}"
    storage.write_bytes_atomically(path, data)
    assert storage.read_bytes(path) == data
    assert storage.listdir(storage.parent(path)) == [name]
    storage.remove_tree(storage.parent(path))
