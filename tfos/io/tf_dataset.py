"""TensorFlow's way to TFRecords, checkpoints and exported models on HDFS: one of two I/O paths.

* ``tensorflow_io``: TensorFlow opens ``hdfs://`` itself (``tf.io.gfile``,
  ``tf.data.TFRecordDataset``, ``model.save``) once tensorflow-io is imported (TensorFlow <= 2.17)
  and libhdfs can start a JVM (``CLASSPATH``, ``libhdfs.so``, ``libjvm.so``: see
  :mod:`tfos.io.hadoop_env`).
* ``tfos``: tfos's own I/O layer (hdfs-native, no JVM): TFRecords are read by
  :func:`tfos.io.tfrecord.read_tfrecords` and streamed into ``tf.data`` through
  ``Dataset.from_generator``; checkpoints are written to a local mirror and uploaded atomically;
  exports are uploaded (and downloaded for loading) with :mod:`tfos.io`.

``auto`` takes ``tensorflow_io`` when it is installed, the libhdfs environment is complete and
(given a ``probe`` path) TensorFlow can stat that path; otherwise ``tfos``. Local paths and other
schemes TensorFlow registers (``gs://``, ``s3://`` with their plug-ins) always go to TensorFlow.

    tio = TensorFlowIO("auto", probe=data_dir)
    ds = tio.tfrecord_dataset(tio.glob(data_dir + "/part-*"))
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tfos.io.checkpoint import CheckpointMirror, export_saved_model
from tfos.io.filesystem import FileSystem, split_url
from tfos.io.hadoop_env import hadoop_env, libhdfs_problems, preload_libhdfs
from tfos.io.tfrecord import read_tfrecords

logger = logging.getLogger(__name__)

__all__ = ["HDFS_IO_CHOICES", "TENSORFLOW_IO", "TFOS", "TensorFlowIO", "enable_tensorflow_io"]

TENSORFLOW_IO = "tensorflow_io"
TFOS = "tfos"
HDFS_IO_CHOICES = ("auto", TENSORFLOW_IO, TFOS)
_HADOOP_SCHEMES = ("hdfs", "viewfs")
_LOCAL_SCHEMES = ("", "file")


def enable_tensorflow_io(environ: Mapping[str, str] | None = None) -> str:
    """Import tensorflow-io so TensorFlow serves ``hdfs://``; returns tensorflow-io's version.

    Raises RuntimeError saying what is missing: the package, a libhdfs prerequisite, or
    ``hdfs`` registration (tensorflow-io 0.37 registers it only with TensorFlow <= 2.17).
    """
    environ = os.environ if environ is None else environ
    if importlib.util.find_spec("tensorflow_io") is None:
        raise RuntimeError("tensorflow-io is not installed (pip install 'tensorflow-io==0.37.1', "
                           "which needs TensorFlow <= 2.17.1)")
    problems = libhdfs_problems(environ)
    if problems:
        raise RuntimeError("libhdfs cannot work in this process: " + "; ".join(problems))
    try:
        preload_libhdfs(environ)
    except OSError as exc:
        raise RuntimeError(f"libhdfs or libjvm does not load: {exc}") from exc
    import tensorflow as tf

    try:
        import tensorflow_io
    except Exception as exc:  # noqa: BLE001 - e.g. a build for another TensorFlow: use tfos instead
        raise RuntimeError(f"tensorflow-io does not import with TensorFlow {tf.__version__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    if "hdfs" not in tf.io.gfile.get_registered_schemes():
        raise RuntimeError(f"tensorflow-io {tensorflow_io.__version__} did not register hdfs:// with "
                           f"TensorFlow {tf.__version__} (it does up to TensorFlow 2.17.1)")
    return str(tensorflow_io.__version__)


def _complete_process_env() -> None:
    """Add what :func:`hadoop_env` computes to this process's environment (CLASSPATH is read when
    libhdfs starts its JVM; LD_LIBRARY_PATH is made up for by :func:`preload_libhdfs`)."""
    added = hadoop_env(os.environ)
    if added:
        os.environ.update(added)
        logger.info("set %s from HADOOP_HOME for libhdfs", ", ".join(sorted(added)))


class TensorFlowIO:
    """The I/O path TensorFlow uses in this process for ``hdfs://``, and helpers that follow it.

    ``hdfs_io``: ``auto``, ``tensorflow_io`` (fail with the reason when it cannot work) or ``tfos``.
    ``probe``: in ``auto`` mode, a path TensorFlow must be able to stat before tensorflow-io is
    chosen (an unreachable NameNode raises :class:`tfos.io.HdfsConnectionError` here, in seconds).
    ``environ``: the environment to judge libhdfs by; None means this process's, which is first
    completed from ``HADOOP_HOME`` with :func:`tfos.io.hadoop_env.hadoop_env` (unless ``tfos``).
    After construction, :attr:`mode` is ``tensorflow_io`` or ``tfos`` and :attr:`reason` says why.
    """

    def __init__(self, hdfs_io: str = "auto", *, probe: str | None = None,
                 environ: Mapping[str, str] | None = None):
        if hdfs_io not in HDFS_IO_CHOICES:
            raise ValueError(f"hdfs_io must be one of {', '.join(HDFS_IO_CHOICES)}, got {hdfs_io!r}")
        self.requested = hdfs_io
        self._auto_fs = FileSystem()
        self._native_fs = FileSystem(backend="native")
        if probe and split_url(probe)[0] in _HADOOP_SCHEMES:
            self._native_fs.exists(probe)  # bounded failure naming the NameNode when it is unreachable
        if hdfs_io == TFOS:
            self.mode, self.reason = TFOS, "requested"
        elif hdfs_io == TENSORFLOW_IO:
            if environ is None:
                _complete_process_env()
            version = enable_tensorflow_io(environ)
            self.mode, self.reason = TENSORFLOW_IO, f"requested, tensorflow-io {version}"
        else:
            self.mode, self.reason = self._choose(probe, environ)
        logger.info("hdfs:// I/O path for TensorFlow: %s (%s)", self.mode, self.reason)

    def _choose(self, probe: str | None, environ: Mapping[str, str] | None) -> tuple[str, str]:
        if environ is None:
            _complete_process_env()
        try:
            version = enable_tensorflow_io(environ)
        except RuntimeError as exc:
            return TFOS, f"tensorflow-io unusable: {exc}"
        if probe and split_url(probe)[0] in _HADOOP_SCHEMES:
            import tensorflow as tf

            try:
                tf.io.gfile.exists(probe)
            except Exception as exc:  # noqa: BLE001 - any TF/libhdfs failure means: use tfos
                return TFOS, f"tensorflow-io {version} cannot reach {probe}: {str(exc).splitlines()[0]}"
        return TENSORFLOW_IO, f"tensorflow-io {version} and libhdfs usable"

    @property
    def native_hdfs(self) -> bool:
        """True when TensorFlow itself opens ``hdfs://`` paths."""
        return self.mode == TENSORFLOW_IO

    def describe(self) -> str:
        """One line for logs: the path and why."""
        return f"{self.mode} ({self.reason})"

    # ------------------------------------------------------------------ file system
    def tf_can_open(self, path: str) -> bool:
        """True when TensorFlow can open ``path`` directly on this I/O path."""
        scheme = split_url(path)[0]
        if scheme in _LOCAL_SCHEMES:
            return True
        if scheme in _HADOOP_SCHEMES:
            return self.native_hdfs
        tf = sys.modules.get("tensorflow")
        return tf is not None and scheme in tf.io.gfile.get_registered_schemes()

    def fs_for(self, path: str) -> FileSystem:
        """The :class:`FileSystem` serving ``path`` on this I/O path (hdfs-native for HDFS under ``tfos``)."""
        if self.mode == TFOS and split_url(path)[0] in _HADOOP_SCHEMES:
            return self._native_fs
        return self._auto_fs

    def exists(self, path: str) -> bool:
        """True when ``path`` exists."""
        return self.fs_for(path).exists(path)

    def glob(self, pattern: str) -> list[str]:
        """Sorted paths matching a shell pattern, listed through the tfos FileSystem."""
        return self.fs_for(pattern).glob(pattern)

    # ------------------------------------------------------------------ TFRecords
    def tfrecord_dataset(self, files: Sequence[str], compression: str | None = None,
                         num_parallel_reads: int | None = None, chunk_records: int = 256) -> Any:
        """A ``tf.data.Dataset`` of the serialized records of ``files`` (scalar ``tf.string``).

        ``tf.data.TFRecordDataset`` when TensorFlow can open every file; otherwise the files are
        read by tfos (``compression``: None, ``GZIP``, ``ZLIB`` or ``auto``) in chunks of
        ``chunk_records`` through ``Dataset.from_generator``, ``num_parallel_reads`` files at a time.
        """
        import tensorflow as tf

        files = list(files)
        if not files:
            raise ValueError("no TFRecord files to read")
        if all(self.tf_can_open(f) for f in files):
            comp = "" if compression is None or compression.upper() in ("AUTO", "NONE") else compression.upper()
            return tf.data.TFRecordDataset(files, compression_type=comp, num_parallel_reads=num_parallel_reads)
        parallel = max(1, min(num_parallel_reads or 1, len(files)))
        make_fs = self._reader_fs_factory()

        def records(path: bytes) -> Iterator[list[bytes]]:
            name = path.decode()
            chunk: list[bytes] = []
            with make_fs() as fs:
                for record in read_tfrecords(name, compression, fs=fs):
                    chunk.append(record)
                    if len(chunk) >= chunk_records:
                        yield chunk
                        chunk = []
            if chunk:
                yield chunk

        spec = tf.TensorSpec(shape=(None,), dtype=tf.string)
        names = tf.data.Dataset.from_tensor_slices(files)
        chunks = names.interleave(lambda p: tf.data.Dataset.from_generator(records, args=(p,), output_signature=spec),
                                  cycle_length=parallel, block_length=1,
                                  num_parallel_calls=parallel if parallel > 1 else None, deterministic=True)
        return chunks.unbatch()

    def _reader_fs_factory(self) -> Any:
        """A callable giving a fresh FileSystem per file read (reads run on tf.data's threads)."""
        backend = "native" if self.mode == TFOS else None

        def make() -> FileSystem:
            return FileSystem(backend=backend)

        return make

    # ------------------------------------------------------------------ checkpoints and models
    def checkpoint_mirror(self, directory: str, local_dir: str | None = None) -> CheckpointMirror:
        """A :class:`CheckpointMirror` of ``directory``: direct when TensorFlow can write it."""
        return CheckpointMirror(directory, local_dir, fs=self.fs_for(directory), direct=self.tf_can_open(directory))

    def upload_export(self, local_dir: str, export_dir: str) -> str:
        """Move a locally saved model to ``export_dir`` atomically (old or complete, never partial)."""
        return export_saved_model(local_dir, export_dir, fs=self.fs_for(export_dir))

    @contextlib.contextmanager
    def local_copy(self, directory: str) -> Iterator[str]:
        """A path TensorFlow can open holding ``directory``: itself, or a temporary download."""
        fs = self.fs_for(directory)
        if not fs.isdir(directory):
            raise FileNotFoundError(errno.ENOENT, "No such directory", directory)
        if self.tf_can_open(directory):
            yield split_url(directory)[2] if split_url(directory)[0] == "file" else directory
            return
        tmp = tempfile.mkdtemp(prefix="tfos-download-")
        try:
            target = os.path.join(tmp, os.path.basename(directory.rstrip("/")) or "model")
            fs.copytree(directory, target, atomic=False)
            yield target
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def close(self) -> None:
        """Drop cached HDFS clients."""
        self._auto_fs.close()
        self._native_fs.close()
