"""Driver <-> executor control plane (``protocol``, ``server``, ``client``).

``Client`` and ``Server`` are TensorFlowOnSpark's ``reservation`` names, re-exported from
:mod:`tfos.tensorflowonspark.reservation`: ``reservation.Client(cluster.server_addr)
.request_stop()`` ends a streaming job from any process.
"""

from tfos.tensorflowonspark.reservation import (
    BUFSIZE,
    MAX_RETRIES,
    TFOS_SERVER_HOST,
    TFOS_SERVER_PORT,
    Client,
    Reservations,
    Server,
)

__all__ = ["BUFSIZE", "MAX_RETRIES", "TFOS_SERVER_HOST", "TFOS_SERVER_PORT", "Client", "Reservations", "Server"]
