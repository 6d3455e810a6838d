"""tfos.io.checkpoint: checkpoints and exports to hdfs:// through a local mirror (hdfs-native)."""

from __future__ import annotations

import os
import uuid

import pytest

from tfos.io.checkpoint import CheckpointMirror, export_saved_model, latest_checkpoint_name, local_mirror
from tfos.io.filesystem import FileSystem

INDEX = 'model_checkpoint_path: "{0}"\nall_model_checkpoint_paths: "{0}"\n'


def _fake_save(local_dir: str, step: int, keep: int = 2) -> None:
    """What tf.train.CheckpointManager(max_to_keep=keep).save() leaves in a directory."""
    for name in (f"ckpt-{step}.index", f"ckpt-{step}.data-00000-of-00001"):
        with open(os.path.join(local_dir, name), "wb") as f:
            f.write(f"{name}-payload".encode())
    old = step - keep
    for name in (f"ckpt-{old}.index", f"ckpt-{old}.data-00000-of-00001"):
        if os.path.exists(os.path.join(local_dir, name)):
            os.remove(os.path.join(local_dir, name))
    with open(os.path.join(local_dir, "checkpoint"), "w") as f:
        f.write(INDEX.format(os.path.join(local_dir, f"ckpt-{step}")))  # absolute, as tf.compat.v1 Saver


def test_latest_checkpoint_name():
    assert latest_checkpoint_name(INDEX.format("ckpt-7")) == "ckpt-7"
    assert latest_checkpoint_name(INDEX.format("/tmp/x/model.ckpt-100")) == "model.ckpt-100"
    assert latest_checkpoint_name("") is None


def test_local_remote_is_direct(tmp_path):
    mirror = CheckpointMirror(str(tmp_path / "ckpt"))
    assert mirror.direct and mirror.path == str(tmp_path / "ckpt")
    assert mirror.upload() == []
    assert CheckpointMirror(f"file://{tmp_path}/c").path == f"{tmp_path}/c"


def test_mirror_uploads_downloads_latest_and_syncs_deletes(hdfs_url):
    fs = FileSystem()
    remote = f"{hdfs_url}/tmp/tfos-ckpt-{uuid.uuid4().hex[:8]}"
    with local_mirror(remote, fs=fs) as mirror:
        assert not mirror.direct and mirror.download() is None
        local = mirror.path
        for step in (1, 2, 3):
            _fake_save(local, step)
            uploaded = mirror.upload()
            # data before index files before the checkpoint index
            assert [u.rsplit("/", 1)[1] for u in uploaded] == [
                f"ckpt-{step}.data-00000-of-00001", f"ckpt-{step}.index", "checkpoint"]
        assert mirror.upload() == []  # nothing changed
    assert not os.path.exists(local)  # temporary copy removed
    # ckpt-1 was deleted locally (max_to_keep=2) and so remotely; index paths made relative
    assert fs.listdir(remote) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index",
                                  "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    assert fs.read_bytes(f"{remote}/checkpoint").decode() == INDEX.format("ckpt-3")

    # a fresh mirror (a restarted job) gets only the newest checkpoint
    with local_mirror(remote, fs=fs) as again:
        assert sorted(os.listdir(again.path)) == ["checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
        assert again.latest_checkpoint() == os.path.join(again.path, "ckpt-3")
    with local_mirror(remote, fs=fs, latest_only=False) as everything:
        assert len(os.listdir(everything.path)) == 5
    fs.delete(remote, recursive=True)


def test_tensorflow_checkpoint_roundtrip_through_hdfs(hdfs_url):
    tf = pytest.importorskip("tensorflow")
    remote = f"{hdfs_url}/tmp/tfos-tfckpt-{uuid.uuid4().hex[:8]}"
    with local_mirror(remote, direct=False) as mirror:
        v = tf.Variable(1.0)
        ckpt = tf.train.Checkpoint(v=v)
        manager = tf.train.CheckpointManager(ckpt, mirror.path, max_to_keep=1)
        for value in (2.0, 3.0):
            v.assign(value)
            manager.save()
            mirror.upload()
    with local_mirror(remote, direct=False) as restored:
        w = tf.Variable(0.0)
        tf.train.Checkpoint(v=w).restore(tf.train.latest_checkpoint(restored.path)).assert_consumed()
        assert float(w.numpy()) == 3.0
    FileSystem().delete(remote, recursive=True)


def test_export_saved_model_replaces_atomically(hdfs_url, tmp_path):
    fs = FileSystem()
    export = tmp_path / "export"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"v1")
    (export / "variables" / "variables.index").write_bytes(b"i1")
    remote = f"{hdfs_url}/tmp/tfos-export-{uuid.uuid4().hex[:8]}/model"
    assert export_saved_model(str(export), remote, fs=fs) == remote
    assert fs.read_bytes(f"{remote}/variables/variables.index") == b"i1"
    (export / "saved_model.pb").write_bytes(b"v2")
    export_saved_model(str(export), remote, fs=fs)
    assert fs.read_bytes(f"{remote}/saved_model.pb") == b"v2"
    parent = remote.rsplit("/", 1)[0]
    assert fs.listdir(parent) == ["model"]  # no temporary or old copies left
    with pytest.raises(FileExistsError):
        export_saved_model(str(export), remote, fs=fs, overwrite=False)
    with pytest.raises(FileNotFoundError):
        export_saved_model(str(tmp_path / "nope"), remote, fs=fs)
    fs.delete(parent, recursive=True)
