"""tfos's up-front YARN queue checks against a fake ResourceManager REST API (in-process, seconds).

The same checks run against the real ResourceManager in tests/test_yarn.py; here each refusal is
driven on its own, with the REST shapes Hadoop 3's Capacity Scheduler returns.
"""

from __future__ import annotations

import pytest

from tests.yarn_fixture import fake_resource_manager
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


ROUTES = {"/ws/v1/cluster/scheduler": SCHEDULER, "/ws/v1/cluster/nodes": NODES,
          "/ws/v1/cluster/info": {"clusterInfo": {"hadoopVersion": "3.5.0"}},
          "/ws/v1/cluster/apps/application_1_0001": APP}


@pytest.fixture(scope="module")
def rm_url():
    with fake_resource_manager(ROUTES) as address:
        yield address


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


# ------------------------------------------------------------------ what the driver says while it waits
def _usage(partition: str, used_mb: int, used_vcores: int, pending_mb: int = 0, pending_vcores: int = 0) -> dict:
    zero = {"memory": 0, "vCores": 0}
    return {"partitionName": partition, "used": {"memory": used_mb, "vCores": used_vcores},
            "pending": {"memory": pending_mb, "vCores": pending_vcores}, "reserved": zero, "amUsed": zero}


def _full_queue_routes(state: str) -> dict:
    """A CPU_Q that another application fills (Hadoop 3.5.0's REST shapes, trimmed)."""
    queue = {**_queue("CPU_Q", "CPU"), "numActiveApplications": 2, "numPendingApplications": 1,
             "capacities": {"queueCapacitiesByPartition": [
                 {"partitionName": "", "absoluteCapacity": 50.0, "absoluteMaxCapacity": 100.0,
                  "absoluteUsedCapacity": 0.0},
                 {"partitionName": "CPU", "absoluteCapacity": 100.0, "absoluteMaxCapacity": 100.0,
                  "absoluteUsedCapacity": 96.9}]}}
    cpu = {**_node("h2:8041", "CPU"), "usedMemoryMB": 7936, "availMemoryMB": 256, "usedVirtualCores": 4,
           "availableVirtualCores": 0}
    app = {"id": "application_1_0001", "queue": "root.CPU_Q", "state": state,
           "runningContainers": 1 if state == "RUNNING" else 0,
           "diagnostics": "[Wed Dec 02 14:10:00 +0000 2026] Application is Activated, waiting for resources to be "
                          "assigned for AM." if state == "ACCEPTED" else "",
           "resourceInfo": {"resourceUsagesByPartition": [_usage("", 0, 0), _usage("CPU", 896, 1, 4096, 2)]}}
    return {"/ws/v1/cluster/scheduler": {"scheduler": {"schedulerInfo": {"queueName": "root",
                                                                          "queues": {"queue": [queue]}}}},
            "/ws/v1/cluster/nodes": {"nodes": {"node": [cpu]}},
            "/ws/v1/cluster/apps/application_1_0001": {"app": app}}


def test_waiting_for_executors_names_the_queue_use_and_what_is_pending():
    with fake_resource_manager(_full_queue_routes("RUNNING")) as address:
        text = yarn.explain_waiting(FakeSpark(address, spark_yarn_queue="CPU_Q"), 2, 0)
    assert text.startswith("0 of 2 executor(s) joined; YARN application application_1_0001 in queue 'CPU_Q' is RUNNING")
    assert "queue 'CPU_Q' uses 96.9% of node label 'CPU' (capacity 100.0%, maximum 100.0%)" in text
    assert "2 application(s) running in the queue, 1 pending" in text
    assert "asked for 4096 MB, 2 vcore(s) more than it was given" in text
    assert "free on its 1 nodes labelled 'CPU': 256 MB, 0 vcore(s)" in text


def test_an_accepted_application_says_it_waits_for_its_application_master():
    with fake_resource_manager(_full_queue_routes("ACCEPTED")) as address:
        text = yarn.explain_waiting(FakeSpark(address))
    assert "is ACCEPTED (waiting for its ApplicationMaster container)" in text
    assert "YARN diagnostics: [Wed Dec 02 14:10:00 +0000 2026] Application is Activated" in text
    assert yarn.explain_waiting(FakeSpark("127.0.0.1:1")) == ""  # no answer: nothing to add


# ------------------------------------------------------------------ queue submit ACLs (tfos doctor)
def _acl(submit: str, administer: str = " ") -> dict:
    return {"queueAcls": {"queueAcl": [{"accessType": "ADMINISTER_QUEUE", "accessControlList": administer},
                                       {"accessType": "SUBMIT_APP", "accessControlList": submit}]}}


ACL_SCHEDULER = {"scheduler": {"schedulerInfo": {"queueName": "root", "queuePath": "root", **_acl(" "), "queues": {
    "queue": [{**_queue("CPU_Q", "CPU"), **_acl("*")},
              {**_queue("SECRET_Q", "CPU"), **_acl("alice hadoop-admins")}]}}}}
RM_CONF = ("<configuration><property><name>yarn.acl.enable</name><value>true</value></property>"
           "</configuration>")


def _answer(allowed: bool, user: str, why: str = "") -> str:
    return (f'<?xml version="1.0"?><rmQueueAclInfo><allowed>{str(allowed).lower()}</allowed><user>{user}</user>'
            f"<diagnostics>{why}</diagnostics></rmQueueAclInfo>")


def acl_routes(answers: bool = True, enforced: bool = True) -> dict:
    """A ResourceManager with ACLs on (root: nobody; CPU_Q: everyone; SECRET_Q: alice and group hadoop-admins).
    With ``answers`` it answers the access check for bob itself, as Hadoop 3.2+ does."""
    routes = {"/ws/v1/cluster/scheduler": ACL_SCHEDULER, "/ws/v1/cluster/nodes": NODES,
              "/ws/v1/cluster/info": {"clusterInfo": {"hadoopVersion": "3.5.0"}},
              "/conf": RM_CONF if enforced else RM_CONF.replace("true", "false")}
    if answers:
        routes["/ws/v1/cluster/queues/CPU_Q/access"] = _answer(True, "bob")
        routes["/ws/v1/cluster/queues/SECRET_Q/access"] = _answer(
            False, "bob", "User=bob doesn't have access to queue=SECRET_Q with acl-type=SUBMIT_APPLICATIONS")
    return routes


def test_acl_lists():
    assert yarn.acl_allows("*", "bob", set()) and yarn.acl_allows(" * ", "bob", set())
    assert yarn.acl_allows("alice,bob", "bob", set()) and not yarn.acl_allows("alice", "bob", set())
    assert yarn.acl_allows("alice hadoop,admins", "bob", {"admins"}) and not yarn.acl_allows(" ", "bob", {"admins"})
    assert yarn.acl_allows(" users", "bob", {"users"})  # groups only


def test_the_resource_manager_answers_who_may_submit():
    with fake_resource_manager(acl_routes()) as address:
        view = yarn.describe([f"http://{address}"], user="bob")
    assert view["acls_enforced"] is True and view["user"] == "bob"
    access = {q["name"]: q["submit"] for q in view["queues"]}
    assert access["CPU_Q"] == {"allowed": True, "source": "ResourceManager", "acl": "*", "detail": ""}
    assert access["SECRET_Q"]["allowed"] is False and access["SECRET_Q"]["source"] == "ResourceManager"
    assert "doesn't have access to queue=SECRET_Q" in access["SECRET_Q"]["detail"]
    assert access["SECRET_Q"]["acl"] == "alice hadoop-admins"


def test_without_the_access_check_the_queue_and_parent_acls_decide():
    with fake_resource_manager(acl_routes(answers=False)) as address:
        rm = yarn.ResourceManagerView([f"http://{address}"])
        scheduler = rm.get("scheduler")["scheduler"]["schedulerInfo"]
        bob = yarn.submit_access(rm, scheduler, "SECRET_Q", "bob", {"users"})
        carol = yarn.submit_access(rm, scheduler, "SECRET_Q", "carol", {"hadoop-admins"})
        alice = yarn.submit_access(rm, scheduler, "SECRET_Q", "alice", set())
        anyone = yarn.submit_access(rm, scheduler, "CPU_Q", "bob", set())
    assert bob["allowed"] is False and bob["source"] == "queue ACLs"
    assert "no submit or administer ACL of root, root.SECRET_Q names bob or its groups (users)" in bob["detail"]
    assert carol["allowed"] and alice["allowed"] and anyone == {"allowed": True, "source": "queue ACLs", "acl": "*",
                                                               "detail": "granted by root.CPU_Q"}


def test_doctor_lines_for_refused_and_unenforced_acls():
    from tfos.cli import _format_yarn

    with fake_resource_manager(acl_routes()) as address:
        text = "\n".join(_format_yarn(yarn.describe([f"http://{address}"], user="bob"), "SECRET_Q"))
    assert "    submit as bob: allowed (ResourceManager, submit ACL '*')" in text
    assert ("    submit as bob: REFUSED (ResourceManager, submit ACL 'alice hadoop-admins': User=bob doesn't have "
            "access to queue=SECRET_Q") in text
    assert "to do: bob may not submit to queue 'SECRET_Q'" in text and "acl_submit_applications" in text
    with fake_resource_manager(acl_routes(enforced=False)) as address:
        text = "\n".join(_format_yarn(yarn.describe([f"http://{address}"], user="bob"), "SECRET_Q"))
    assert "submit as bob: allowed, but only because yarn.acl.enable=false" in text and "to do" not in text
