"""tfos's up-front YARN queue checks against a fake ResourceManager REST API (in-process, seconds).

The same checks run against the real ResourceManager in tests/test_yarn.py; here each refusal is
driven on its own, with the REST shapes Hadoop 3's Capacity Scheduler returns.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tfos.cluster import yarn

GB = 1024


def _node(nid: str, label: str | None, memory_mb: int = 8 * GB, vcores: int = 4, gpus: int = 0) -> dict:
    infos = [{"name": "memory-mb", "value": memory_mb}, {"name": "vcores", "value": vcores}]
    if gpus:
        infos.append({"name": "yarn.io/gpu", "value": gpus})
    return {"id": nid, "state": "RUNNING", "nodeLabels": [label] if label else [], "usedMemoryMB": 0,
            "availMemoryMB": memory_mb, "usedVirtualCores": 0, "availableVirtualCores": vcores,
            "totalResource": {"resourceInformations": {"resourceInformation": infos}}}


def _queue(name: str, label: str, state: str = "RUNNING") -> dict:
    return {"queueName": name, "queuePath": f"root.{name}", "state": state, "capacity": 50.0, "maxCapacity": 100.0,
            "nodeLabels": [label], "defaultNodeLabelExpression": label}


SCHEDULER = {"scheduler": {"schedulerInfo": {"queueName": "root", "queues": {"queue": [
    _queue("CPU_Q", "CPU"), _queue("GPU_Q", "GPU"), _queue("OLD_Q", "CPU", state="STOPPED")]}}}}
NODES = {"nodes": {"node": [_node("h1:8041", "GPU", gpus=4), _node("h2:8041", "CPU")]}}
APP = {"app": {"id": "application_1_0001", "queue": "CPU_Q", "state": "RUNNING", "runningContainers": 1,
               "diagnostics": "Queue's AM resource limit exceeded."}}


@pytest.fixture(scope="module")
def rm_url():
    routes = {"/ws/v1/cluster/scheduler": SCHEDULER, "/ws/v1/cluster/nodes": NODES,
              "/ws/v1/cluster/info": {"clusterInfo": {"hadoopVersion": "3.5.0"}},
              "/ws/v1/cluster/apps/application_1_0001": APP}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = routes.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body or {}).encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class FakeSpark:
    """Just what the checks read from a SparkContext: its conf, the Hadoop conf, the application id."""

    def __init__(self, rm_address: str, **conf: str):
        self.conf = {k.replace("_", "."): v for k, v in conf.items()}
        self.applicationId = "application_1_0001"
        hadoop = {"yarn.resourcemanager.webapp.address": rm_address}

        class _Hadoop:
            def get(self, key):
                return hadoop.get(key)

        class _Jsc:
            def hadoopConfiguration(self):
                return _Hadoop()

        self._jsc = _Jsc()

    def getConf(self):  # noqa: N802 - SparkContext's name
        conf = self.conf

        class _Conf:
            def get(self, key, default=None):
                return conf.get(key, default)

        return _Conf()


def test_a_request_the_queue_can_hold_passes(rm_url):
    assert yarn.check_request(FakeSpark(rm_url, spark_yarn_queue="CPU_Q"), 3) is None


def test_unknown_and_stopped_queues_are_named(rm_url):
    assert "YARN queue 'NOPE_Q' does not exist" in yarn.check_request(FakeSpark(rm_url, spark_yarn_queue="NOPE_Q"), 1)
    assert "YARN queue 'OLD_Q' is STOPPED" in yarn.check_request(FakeSpark(rm_url, spark_yarn_queue="OLD_Q"), 1)


def test_a_label_the_queue_cannot_use_is_named(rm_url):
    sc = FakeSpark(rm_url, spark_yarn_queue="CPU_Q", **{"spark.yarn.executor.nodeLabelExpression": "GPU"})
    message = yarn.check_request(sc, 1)
    assert "node label 'GPU'" in message and "'CPU_Q'" in message and "its labels: CPU" in message


def test_more_executors_than_the_nodes_hold_beside_the_am(rm_url):
    # 8 GB / 4 vcores on the CPU node; the AM (client mode: 512 MB + 384 MB, 1 vcore) leaves 3 vcores
    message = yarn.check_request(FakeSpark(rm_url, spark_yarn_queue="CPU_Q"), 4)
    assert "needs 4 executors but YARN queue 'CPU_Q' can never run more than 3" in message
    assert "1408 MB, 1 vcore(s)" in message  # 1 GB heap + 384 MB overhead, as Spark asks
    big = FakeSpark(rm_url, spark_yarn_queue="CPU_Q", **{"spark.executor.memory": "4g"})
    assert "can never run more than 1" in yarn.check_request(big, 2)  # 4.4 GB each, 7.1 GB left beside the AM


def test_gpus_are_counted(rm_url):
    sc = FakeSpark(rm_url, spark_yarn_queue="GPU_Q", **{"spark.executor.resource.gpu.amount": "3"})
    message = yarn.check_request(sc, 2)
    assert "can never run more than 1" in message and "3 GPU(s)" in message
    ok = FakeSpark(rm_url, spark_yarn_queue="GPU_Q", **{"spark.executor.resource.gpu.amount": "1"})
    assert yarn.check_request(ok, 3) is None


def test_no_answer_skips_the_checks():
    assert yarn.check_request(FakeSpark("127.0.0.1:1", spark_yarn_queue="CPU_Q"), 99) is None


def test_what_yarn_says_while_executors_are_missing(rm_url):
    text = yarn.explain_missing(FakeSpark(rm_url))
    assert "queue 'CPU_Q' is RUNNING" in text and "Queue's AM resource limit exceeded." in text


def test_describe_lists_queues_and_nodes_by_label(rm_url):
    view = yarn.describe([f"http://{rm_url}"])
    assert view["version"] == "3.5.0"
    assert {q["name"]: q["default_label"] for q in view["queues"]} == {"CPU_Q": "CPU", "GPU_Q": "GPU", "OLD_Q": "CPU"}
    assert view["nodes"]["GPU"]["gpus"] == 4 and view["nodes"]["CPU"]["gpus"] == 0
    assert yarn.describe(["http://127.0.0.1:1"])["reachable"] is False


# ------------------------------------------------------------------ a lost executor's reason
def test_a_memory_kill_names_the_setting_to_raise():
    from tfos.cluster.executor_loss import lost_in_job_error, memory_hint

    reason = ("Container killed by YARN for exceeding physical memory limits. 2.1 GB of 2 GB physical memory used. "
              "Consider boosting spark.executor.memoryOverhead.")
    job_error = f"Job aborted: ExecutorLostFailure (executor 7 exited caused by one of the running tasks) Reason: {reason}\n"
    assert lost_in_job_error(job_error) == {"7": reason}
    assert "spark.executor.memoryOverhead" in memory_hint(reason) and "TF process" in memory_hint(reason)
    assert memory_hint("Container marked as failed: ... Exit status: 137. Diagnostics: Killed by signal")
    assert memory_hint("Container released by the ResourceManager (preempted)") == ""
