"""How training data reaches the TF nodes."""

from __future__ import annotations


class InputMode:
    """``TENSORFLOW``: nodes read their own data (e.g. TFRecords on HDFS).
    ``SPARK``: Spark partitions are fed to the nodes (``cluster.train`` / ``cluster.inference``)."""

    TENSORFLOW = 0
    SPARK = 1

    @classmethod
    def validate(cls, value: int) -> int:
        if value not in (cls.TENSORFLOW, cls.SPARK):
            raise ValueError(f"input_mode must be InputMode.TENSORFLOW (0) or InputMode.SPARK (1), got {value!r}")
        return value
