"""TensorFlowOnSpark ``marker``: the marker classes of its data queues.

tfos's feed marks the end of a partition or of the feed in its own channel protocol; these
classes exist for code that names them (``isinstance(item, marker.EndPartition)``).
"""

from __future__ import annotations


class Marker:
    """Base class of special objects in a data queue."""


class EndPartition(Marker):
    """The end of one RDD partition during data feeding."""
