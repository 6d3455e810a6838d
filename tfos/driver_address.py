"""The address on the Spark driver that executors dial: the reservation server and the feed's
progress server both listen there.

``TFOS_RESERVATION_HOST`` (environment) or ``spark.tfos.reservation.host`` (Spark conf) set it
for drivers whose ``spark.driver.host`` the executors cannot reach (several interfaces, NAT);
otherwise ``spark.driver.host``, else 127.0.0.1.
"""

from __future__ import annotations

import os
from typing import Any


def driver_address(sc: Any) -> str:
    """The host executors use to reach servers on the driver of ``sc``."""
    conf = sc.getConf()
    return (os.environ.get("TFOS_RESERVATION_HOST") or conf.get("spark.tfos.reservation.host", None)
            or conf.get("spark.driver.host", None) or "127.0.0.1")
