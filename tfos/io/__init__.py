"""Files for tfos: default-FS paths, a local/HDFS file-system facade, TFRecords without TensorFlow,
``tf.train.Example`` coding, checkpoint mirroring and DataFrame <-> TFRecord conversion.

Nothing here imports TensorFlow or pyspark at import time; ``tfos.io.dataframe_tfrecord`` needs
pyspark and ``tfos.io.checkpoint`` uses TensorFlow only if the caller already imported it.
"""

from tfos.io.example_codec import Feature, decode_example, encode_example
from tfos.io.filesystem import FileInfo, FileSystem, HdfsConnectionError
from tfos.io.paths import absolute_path, default_fs
from tfos.io.tfrecord import TFRecordCorruptError, TFRecordWriter, read_tfrecords, write_tfrecords

__all__ = [
    "Feature",
    "FileInfo",
    "FileSystem",
    "HdfsConnectionError",
    "TFRecordCorruptError",
    "TFRecordWriter",
    "absolute_path",
    "decode_example",
    "default_fs",
    "encode_example",
    "read_tfrecords",
    "write_tfrecords",
]
