"""Checkpoint to and restore from an ``hdfs://`` directory, whichever way is available.

When TensorFlow can write the remote scheme itself (tensorflow-io with libhdfs for ``hdfs://``)
or the directory is local, a :class:`CheckpointMirror` is *direct*: ``mirror.path`` is the
remote directory and nothing is copied. Otherwise it is a local working copy::

    with local_mirror("hdfs://nn:8020/user/me/model") as ckpt:   # downloads the latest checkpoint
        manager = tf.train.CheckpointManager(checkpoint, ckpt.path, max_to_keep=3)
        checkpoint.restore(manager.latest_checkpoint)
        for epoch in ...:
            manager.save()
            ckpt.upload()                                        # new files go up, atomically
    export_saved_model(local_export_dir, "hdfs://nn:8020/user/me/export")

Uploads write each file under a hidden temporary name and rename it into place, data files
before ``*.index`` files before the ``checkpoint`` index, so a reader never sees an index that
names missing or partial files. TensorFlow is never imported here.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

from tfos.io.filesystem import FileSystem, join, split_url, temp_sibling

__all__ = ["CheckpointMirror", "export_saved_model", "latest_checkpoint_name", "local_mirror"]

INDEX_FILE = "checkpoint"
_INDEX_LINE = re.compile(r'^(\s*(?:model_checkpoint_path|all_model_checkpoint_paths)\s*:\s*)"(.*)"\s*$')


def latest_checkpoint_name(index_text: str) -> str | None:
    """Base name of ``model_checkpoint_path`` in the text of a TF ``checkpoint`` index file."""
    for line in index_text.splitlines():
        m = _INDEX_LINE.match(line)
        if m and m.group(1).strip().startswith("model_checkpoint_path"):
            return os.path.basename(m.group(2).rstrip("/")) or None
    return None


def _relativize_index(index_text: str) -> str:
    """Rewrite absolute (machine-local) paths in a ``checkpoint`` index to base names."""
    out = []
    for line in index_text.splitlines():
        m = _INDEX_LINE.match(line)
        out.append(f'{m.group(1)}"{os.path.basename(m.group(2))}"' if m else line)
    return "\n".join(out) + "\n"


def _upload_rank(rel: str) -> tuple[int, str]:
    base = os.path.basename(rel)
    if base == INDEX_FILE:
        return 2, rel
    if base.endswith(".index"):
        return 1, rel
    return 0, rel


class CheckpointMirror:
    """A directory TF can checkpoint into that is kept in step with ``remote_dir``.

    ``direct=None`` (auto) is direct when ``remote_dir`` is local or served by ``tf.io.gfile``
    (TensorFlow already imported with that scheme registered). ``latest_only`` downloads just
    the newest checkpoint named by a ``checkpoint`` index (all files when there is no index).
    ``sync_deletes`` removes remote files that were mirrored and then deleted locally (e.g.
    old checkpoints dropped by ``CheckpointManager(max_to_keep=...)``).
    """

    def __init__(self, remote_dir: str, local_dir: str | None = None, *, fs: FileSystem | None = None,
                 direct: bool | None = None, latest_only: bool = True, sync_deletes: bool = True):
        self.remote_dir = remote_dir.rstrip("/") or remote_dir
        self.fs = fs or FileSystem()
        backend = self.fs.backend_for(remote_dir)
        self.direct = backend in ("local", "tf") if direct is None else direct
        self.latest_only = latest_only
        self.sync_deletes = sync_deletes
        self._owns_local = False
        if self.direct:
            self.local_dir = split_url(remote_dir)[2] if backend == "local" else self.remote_dir
        elif local_dir is None:
            self.local_dir = tempfile.mkdtemp(prefix="tfos-ckpt-")
            self._owns_local = True
        else:
            self.local_dir = local_dir
            os.makedirs(local_dir, exist_ok=True)
        self._synced: dict[str, tuple[int, int]] = {}

    @property
    def path(self) -> str:
        """The directory to give TensorFlow (local copy, or the remote directory when direct)."""
        return self.local_dir

    def _signature(self, rel: str) -> tuple[int, int]:
        st = os.stat(os.path.join(self.local_dir, rel))
        return st.st_size, st.st_mtime_ns

    def _local_files(self) -> list[str]:
        rels = []
        for root, dirs, files in os.walk(self.local_dir):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if not name.startswith(".") and not name.endswith(".tmp"):
                    rels.append(os.path.relpath(os.path.join(root, name), self.local_dir))
        return sorted(rels)

    def download(self) -> str | None:
        """Copy the remote checkpoint(s) into the local directory; returns the latest local prefix."""
        if self.direct:
            return self.latest_checkpoint()
        if not self.fs.isdir(self.remote_dir):
            return None
        prefix = len(self.remote_dir) + 1
        remote = [info.path[prefix:] for info in self.fs.walk_files(self.remote_dir)]
        remote = [r for r in remote if not os.path.basename(r).startswith(".")]
        wanted = remote
        if self.latest_only and INDEX_FILE in remote:
            latest = latest_checkpoint_name(self.fs.read_bytes(join(self.remote_dir, INDEX_FILE)).decode())
            if latest:
                wanted = [r for r in remote if r == INDEX_FILE or os.path.basename(r).startswith(latest + ".")]
        for rel in wanted:
            local = os.path.join(self.local_dir, rel)
            self.fs.copy(join(self.remote_dir, rel), local)
            self._synced[rel] = self._signature(rel)
        return self.latest_checkpoint()

    def latest_checkpoint(self) -> str | None:
        """Path prefix of the newest checkpoint in :attr:`path` (as ``tf.train.latest_checkpoint``)."""
        index = join(self.local_dir, INDEX_FILE)
        if not self.fs.exists(index):
            return None
        name = latest_checkpoint_name(self.fs.read_bytes(index).decode())
        return join(self.local_dir, name) if name else None

    def upload(self) -> list[str]:
        """Copy new and changed local files to the remote directory; returns the remote paths."""
        if self.direct:
            return []
        current = self._local_files()
        changed = [rel for rel in current if self._synced.get(rel) != self._signature(rel)]
        uploaded = []
        for rel in sorted(changed, key=_upload_rank):
            local, remote = os.path.join(self.local_dir, rel), join(self.remote_dir, *rel.split(os.sep))
            sig = self._signature(rel)
            if os.path.basename(rel) == INDEX_FILE:
                with open(local, encoding="utf-8") as f:
                    self.fs.write_bytes(remote, _relativize_index(f.read()).encode("utf-8"))
            else:
                self.fs.copy(local, remote)
            self._synced[rel] = sig
            uploaded.append(remote)
        if self.sync_deletes:
            for rel in sorted(set(self._synced) - set(current)):
                self.fs.delete(join(self.remote_dir, *rel.split(os.sep)), missing_ok=True)
                del self._synced[rel]
        return uploaded

    def close(self) -> None:
        """Remove the local copy if this mirror created it."""
        if self._owns_local:
            shutil.rmtree(self.local_dir, ignore_errors=True)
            self._owns_local = False

    def __enter__(self) -> CheckpointMirror:
        self.download()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self.upload()
        finally:
            self.close()


def local_mirror(remote_dir: str, local_dir: str | None = None, **kwargs: Any) -> CheckpointMirror:
    """A :class:`CheckpointMirror` of ``remote_dir``; as a context manager it downloads on entry
    and uploads (then removes its temporary copy) on a clean exit."""
    return CheckpointMirror(remote_dir, local_dir, **kwargs)


def export_saved_model(local_dir: str, remote_dir: str, *, fs: FileSystem | None = None,
                       overwrite: bool = True) -> str:
    """Upload an exported model directory so ``remote_dir`` is always either old or complete.

    The tree is copied to a hidden temporary sibling, then renamed to ``remote_dir`` (an existing
    one is moved aside first and deleted afterwards). Returns ``remote_dir``.
    """
    fs = fs or FileSystem()
    if not os.path.isdir(local_dir):
        raise FileNotFoundError(f"no exported model directory {local_dir}")
    remote_dir = remote_dir.rstrip("/")
    if fs.backend_for(remote_dir) == "local" and os.path.realpath(split_url(remote_dir)[2]) == \
            os.path.realpath(local_dir):
        return remote_dir
    exists = fs.exists(remote_dir)
    if exists and not overwrite:
        raise FileExistsError(f"{remote_dir} already exists (overwrite=False)")
    tmp = temp_sibling(remote_dir)
    try:
        fs.copytree(local_dir, tmp, atomic=False)
    except BaseException:
        fs.delete(tmp, recursive=True, missing_ok=True)
        raise
    old = None
    if exists:
        old = temp_sibling(remote_dir) + ".old"
        fs.rename(remote_dir, old)
    fs.rename(tmp, remote_dir)
    if old:
        fs.delete(old, recursive=True, missing_ok=True)
    return remote_dir
