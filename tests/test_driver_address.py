"""The driver address executors dial (reservation server and feed progress server alike)."""

from __future__ import annotations

from tfos.driver_address import driver_address


def test_driver_address_is_spark_driver_host_unless_overridden(sc, monkeypatch):
    monkeypatch.delenv("TFOS_RESERVATION_HOST", raising=False)
    assert driver_address(sc) == sc.getConf().get("spark.driver.host")
    monkeypatch.setenv("TFOS_RESERVATION_HOST", "10.1.2.3")
    assert driver_address(sc) == "10.1.2.3"
