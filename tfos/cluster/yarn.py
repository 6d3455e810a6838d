"""What the YARN ResourceManager says about this application's queue, for up-front checks and errors.

On ``--master yarn`` a TF cluster that cannot get its executors would otherwise just wait. This
asks the ResourceManager's REST API (address from the Hadoop configuration Spark runs with) which
node label the queue uses, what the nodes of that label can hold, and what YARN says about the
application, so that tfos fails at once with figures when the request can never be granted,
and explains itself when executors are merely slow to come.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_QUEUE = "default"


@dataclass
class QueueView:
    """One queue as the ResourceManager reports it, with the nodes it can place containers on."""

    name: str
    exists: bool
    labels: list[str] = field(default_factory=list)  # accessible node labels ('*' for all)
    default_label: str = ""
    state: str = ""
    nodes: list[dict[str, Any]] = field(default_factory=list)  # nodes of the label the executors will use


def _conf(sc: Any, key: str) -> str | None:
    try:
        value = sc._jsc.hadoopConfiguration().get(key)
    except Exception:  # noqa: BLE001 - no JVM (tests with fakes) or a stopping context
        return None
    return str(value) if value is not None else None


def rm_web_urls(get: Callable[[str], str | None]) -> list[str]:
    """The ResourceManager web addresses from a Hadoop configuration lookup ``get`` (each RM of an HA pair)."""
    ids = (get("yarn.resourcemanager.ha.rm-ids") or "").split(",")
    keys = [f"yarn.resourcemanager.webapp.address.{i.strip()}" for i in ids if i.strip()]
    keys.append("yarn.resourcemanager.webapp.address")
    urls = []
    for key in keys:
        address = get(key)
        if address:
            host, _, port = address.rpartition(":")
            if host in ("0.0.0.0", ""):
                host = (get("yarn.resourcemanager.hostname") or "127.0.0.1").strip()
            urls.append(f"http://{host}:{port}")
    return urls


class ResourceManagerView:
    """Read-only REST queries; every call is bounded by ``timeout`` and returns None when YARN does not answer."""

    def __init__(self, urls: list[str], timeout: float = 5.0):
        self.urls = urls
        self.timeout = timeout

    def get(self, path: str) -> Any:
        for url in self.urls:
            try:
                with urllib.request.urlopen(f"{url}/ws/v1/cluster/{path}", timeout=self.timeout) as reply:
                    return json.load(reply)
            except (OSError, ValueError) as exc:
                logger.debug("ResourceManager %s did not answer %s: %s", url, path, exc)
        return None

    def fetch(self, path: str, accept: str = "application/xml") -> str | None:
        """GET ``{url}{path}`` (``path`` from the web root, e.g. ``/conf``) as text; None when no RM answers."""
        for url in self.urls:
            try:
                request = urllib.request.Request(f"{url}{path}", headers={"Accept": accept})
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    return reply.read().decode("utf-8", "replace")
            except (OSError, ValueError) as exc:
                logger.debug("ResourceManager %s did not answer %s: %s", url, path, exc)
        return None

    def queue(self, name: str, label_expression: str | None) -> QueueView | None:
        scheduler = self.get("scheduler")
        if scheduler is None:
            return None
        info = _find_queue(scheduler.get("scheduler", {}).get("schedulerInfo", {}), name)
        if info is None:
            return QueueView(name, exists=False)
        labels = info.get("nodeLabels") or []
        labels = [labels] if isinstance(labels, str) else list(labels)
        view = QueueView(name, True, labels, info.get("defaultNodeLabelExpression") or "", info.get("state", ""))
        label = view.default_label if label_expression is None else label_expression
        nodes = (self.get("nodes") or {}).get("nodes") or {}
        for node in nodes.get("node", []) if isinstance(nodes, dict) else []:
            node_labels = node.get("nodeLabels") or []
            if node.get("state") == "RUNNING" and ((label in node_labels) if label else not node_labels):
                view.nodes.append(node)
        return view

    def app(self, app_id: str) -> dict[str, Any] | None:
        reply = self.get(f"apps/{app_id}")
        return reply.get("app") if reply else None


def _find_queue(info: dict[str, Any], name: str) -> dict[str, Any] | None:
    if info.get("queueName") == name or info.get("queuePath") in (name, f"root.{name}"):
        return info
    children = (info.get("queues") or {}).get("queue") or []
    for child in children:
        found = _find_queue(child, name)
        if found is not None:
            return found
    return None


def _memory_mb(value: str | None, default_mb: int) -> int:
    if not value:
        return default_mb
    text = value.strip().lower().removesuffix("b")
    units = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(int(text) / 2**20)  # plain bytes


def executor_container(conf: Any) -> tuple[int, int, int]:
    """(memory MB, vcores, GPUs) YARN is asked for per executor, as Spark computes them."""
    memory = _memory_mb(conf.get("spark.executor.memory", None), 1024)
    overhead_conf = conf.get("spark.executor.memoryOverhead", None)
    factor = float(conf.get("spark.executor.memoryOverheadFactor", "0.1"))
    overhead = _memory_mb(overhead_conf, 0) if overhead_conf else max(384, int(memory * factor))
    pyspark = _memory_mb(conf.get("spark.executor.pyspark.memory", None), 0)
    cores = int(conf.get("spark.executor.cores", "1"))
    gpus = int(float(conf.get("spark.executor.resource.gpu.amount", "0")))
    return memory + overhead + pyspark, cores, gpus


def _node_gpus(node: dict[str, Any]) -> int:
    total = 0
    resource = node.get("totalResource") or {}
    for entry in (resource.get("resourceInformations") or {}).get("resourceInformation", []):
        if entry.get("name") == "yarn.io/gpu":
            total = int(entry.get("value", 0))
    return total


def am_container(conf: Any) -> tuple[int, int]:
    """(memory MB, vcores) of the ApplicationMaster: the driver's in cluster mode, else the launcher's."""
    if conf.get("spark.submit.deployMode", "client") == "cluster":
        memory = _memory_mb(conf.get("spark.driver.memory", None), 1024)
        overhead = conf.get("spark.driver.memoryOverhead", None)
        cores = int(conf.get("spark.driver.cores", "1"))
    else:
        memory = _memory_mb(conf.get("spark.yarn.am.memory", None), 512)
        overhead = conf.get("spark.yarn.am.memoryOverhead", None)
        cores = int(conf.get("spark.yarn.am.cores", "1"))
    return memory + (_memory_mb(overhead, 0) if overhead else max(384, int(memory * 0.1))), cores


def executors_that_fit(view: QueueView, container: tuple[int, int, int], am: tuple[int, int] = (0, 0)) -> int:
    """How many executors the queue's nodes could ever hold at once beside the ApplicationMaster ``am``
    (placed on the roomiest node; what else runs there now is ignored)."""
    memory, cores, gpus = container
    room = sorted(([int(n.get("usedMemoryMB", 0)) + int(n.get("availMemoryMB", 0)),
                    int(n.get("usedVirtualCores", 0)) + int(n.get("availableVirtualCores", 0)), _node_gpus(n)]
                   for n in view.nodes), reverse=True)
    if room:
        room[0][0] -= am[0]
        room[0][1] -= am[1]
    fit = 0
    for mem_total, cores_total, gpu_total in room:
        per_node = min(max(mem_total, 0) // max(memory, 1), max(cores_total, 0) // max(cores, 1))
        if gpus:
            per_node = min(per_node, gpu_total // gpus)
        fit += per_node
    return fit


def check_request(sc: Any, executors: int) -> str | None:
    """An error message when YARN can never grant ``executors`` executors to this application, else None.

    Checked: the queue exists and is running, the executors' node label is one the queue may use,
    and the nodes of that label can hold that many executor containers (memory, vcores, GPUs).
    """
    conf = sc.getConf()
    queue = conf.get("spark.yarn.queue", DEFAULT_QUEUE)
    label_expression = conf.get("spark.yarn.executor.nodeLabelExpression", None)
    rm = ResourceManagerView(rm_web_urls(lambda key: _conf(sc, key)))
    view = rm.queue(queue, label_expression)
    if view is None:
        logger.info("the YARN ResourceManager REST API did not answer; skipping the queue checks")
        return None
    if not view.exists:
        return f"YARN queue {queue!r} does not exist; submit with --queue set to one of the ResourceManager's queues"
    if view.state and view.state != "RUNNING":
        return f"YARN queue {queue!r} is {view.state}, so it accepts no containers; use another --queue"
    label = view.default_label if label_expression is None else label_expression
    if label and "*" not in view.labels and label not in view.labels:
        return (f"the executors' node label {label!r} (spark.yarn.executor.nodeLabelExpression) is not one YARN "
                f"queue {queue!r} may use (its labels: {', '.join(view.labels) or 'none'}); drop that setting or "
                f"submit to a queue with access to {label!r}")
    container = executor_container(conf)
    am_label = conf.get("spark.yarn.am.nodeLabelExpression", None)
    am_here = (view.default_label if am_label is None else am_label) == label
    fit = executors_that_fit(view, container, am_container(conf) if am_here else (0, 0))
    if fit < executors:
        memory, cores, gpus = container
        where = f"nodes labelled {label!r}" if label else "unlabelled nodes"
        return (f"the TF cluster needs {executors} executors but YARN queue {queue!r} can never run more than {fit} "
                f"at once: its {len(view.nodes)} {where} hold {fit} executor containers of {memory} MB, {cores} vcore(s)"
                + (f", {gpus} GPU(s)" if gpus else "")
                + " each beside the ApplicationMaster; lower num_executors / --num-executors, shrink --executor-memory or "
                  "spark.executor.memoryOverhead, or use a queue with more capacity")
    return None


def _short_queue(name: str) -> str:
    return name.rsplit(".", 1)[-1] if name else name


def _partition_capacity(queue_info: dict[str, Any], label: str) -> dict[str, Any] | None:
    """The queue's capacities in node partition ``label`` ('' is the default partition)."""
    entries = (queue_info.get("capacities") or {}).get("queueCapacitiesByPartition") or []
    for entry in entries:
        if (entry.get("partitionName") or "") == label:
            return entry
    return None


def _app_pending(app: dict[str, Any]) -> tuple[int, int]:
    """(MB, vcores) the application has asked YARN for and not yet been given, over all partitions."""
    memory = vcores = 0
    for part in (app.get("resourceInfo") or {}).get("resourceUsagesByPartition") or []:
        pending = part.get("pending") or {}
        memory += int(pending.get("memory", 0) or 0)
        vcores += int(pending.get("vCores", 0) or 0)
    return memory, vcores


def explain_waiting(sc: Any, wanted: int | None = None, joined: int | None = None) -> str:
    """One line on what this YARN application waits for, from the ResourceManager ('' when it does not answer).

    Names the application's state and queue, the queue's use of its node partition against its
    capacity and maximum, its running and pending applications, what this application asked for
    and has not been given, what the partition's nodes have free, and YARN's diagnostics. With
    ``wanted``, it starts with how many of the executors have joined (``joined``). Meant to be
    logged every 10-15 s while the driver waits for executors or TF nodes.
    """
    rm = ResourceManagerView(rm_web_urls(lambda key: _conf(sc, key)))
    app_id = getattr(sc, "applicationId", None)
    app = rm.app(app_id) if app_id else None
    if not app:
        return ""
    queue = _short_queue(str(app.get("queue") or ""))
    state = app.get("state")
    parts = []
    if wanted is not None:
        parts.append(f"{joined if joined is not None else '?'} of {wanted} executor(s) joined")
    head = f"YARN application {app_id} in queue {queue!r} is {state}"
    if state == "ACCEPTED":
        head += " (waiting for its ApplicationMaster container)"
    parts.append(head)
    conf = sc.getConf()
    scheduler = rm.get("scheduler")
    info = _find_queue(scheduler.get("scheduler", {}).get("schedulerInfo", {}), queue) if scheduler else None
    label = conf.get("spark.yarn.executor.nodeLabelExpression", None)
    if info is not None:
        if label is None:
            label = info.get("defaultNodeLabelExpression") or ""
        cap = _partition_capacity(info, label) or {}
        where = f"node label {label!r}" if label else "the unlabelled nodes"
        used = cap.get("absoluteUsedCapacity", info.get("absoluteUsedCapacity"))
        guaranteed = cap.get("absoluteCapacity", info.get("absoluteCapacity"))
        maximum = cap.get("absoluteMaxCapacity", info.get("absoluteMaxCapacity"))
        if used is not None and maximum is not None:
            parts.append(f"queue {queue!r} uses {float(used):.1f}% of {where} (capacity {float(guaranteed or 0):.1f}%, "
                         f"maximum {float(maximum):.1f}%)")
        parts.append(f"{info.get('numActiveApplications', '?')} application(s) running in the queue, "
                     f"{info.get('numPendingApplications', '?')} pending")
    pending_mb, pending_vcores = _app_pending(app)
    if pending_mb or pending_vcores:
        parts.append(f"this application asked for {pending_mb} MB, {pending_vcores} vcore(s) more than it was given")
    running = app.get("runningContainers")
    if running is not None:
        parts.append(f"{running} container(s) running for it (the ApplicationMaster included)")
    if label is not None:
        nodes = ((rm.get("nodes") or {}).get("nodes") or {}).get("node") or []
        mine = [n for n in nodes if n.get("state") == "RUNNING"
                and ((label in (n.get("nodeLabels") or [])) if label else not n.get("nodeLabels"))]
        free_mb = sum(int(n.get("availMemoryMB", 0)) for n in mine)
        free_vcores = sum(int(n.get("availableVirtualCores", 0)) for n in mine)
        where = f"nodes labelled {label!r}" if label else "unlabelled nodes"
        parts.append(f"free on its {len(mine)} {where}: {free_mb} MB, {free_vcores} vcore(s)")
    if app.get("diagnostics"):
        parts.append(f"YARN diagnostics: {' '.join(str(app['diagnostics']).split())}")
    return "; ".join(parts)


def explain_missing(sc: Any) -> str:
    """What YARN says about this application while it waits for executors (see :func:`explain_waiting`), or ''."""
    return explain_waiting(sc)


def rm_web_urls_from_conf_dir(conf_dir: str | None) -> list[str]:
    """The ResourceManager web addresses in ``conf_dir/yarn-site.xml`` (for tools that run without Spark)."""
    import xml.etree.ElementTree as ET

    if not conf_dir:
        return []
    try:
        root = ET.parse(f"{conf_dir}/yarn-site.xml").getroot()
    except (OSError, ET.ParseError):
        return []
    props = {p.findtext("name"): (p.findtext("value") or "").strip() for p in root.iter("property")}
    return rm_web_urls(props.get) or ["http://127.0.0.1:8088"]


# ---------------------------------------------------------------------------- queue ACLs
def submitting_user() -> str:
    """The user YARN sees with simple authentication: ``HADOOP_USER_NAME``, else the login name."""
    import getpass

    return os.environ.get("HADOOP_USER_NAME") or getpass.getuser()


def local_groups(user: str) -> set[str]:
    """``user``'s groups on this host (YARN resolves them on the ResourceManager's host; usually the same)."""
    import grp
    import pwd

    try:
        gid = pwd.getpwnam(user).pw_gid
        return {grp.getgrgid(g).gr_name for g in os.getgrouplist(user, gid)}
    except (KeyError, OSError):
        return set()


def acl_allows(acl: str, user: str, groups: set[str]) -> bool:
    """Whether a Hadoop access control list (``*``, or ``user1,user2 group1,group2``) admits ``user``."""
    if acl.strip() == "*":
        return True
    users, _, group_part = acl.partition(" ")
    return user in {u.strip() for u in users.split(",")} or bool(
        groups & {g.strip() for g in group_part.split(",") if g.strip()})


def _queue_acls(info: dict[str, Any]) -> dict[str, str]:
    entries = (info.get("queueAcls") or {}).get("queueAcl") or []
    return {e.get("accessType", ""): e.get("accessControlList", "") for e in entries if isinstance(e, dict)}


def _queue_chain(info: dict[str, Any], name: str, chain: list[dict[str, Any]] | None = None) -> list[dict[str, Any]] | None:
    """The queues from the root down to ``name`` (None when absent)."""
    chain = [*(chain or []), info]
    if info.get("queueName") == name or info.get("queuePath") in (name, f"root.{name}"):
        return chain
    for child in (info.get("queues") or {}).get("queue") or []:
        found = _queue_chain(child, name, chain)
        if found is not None:
            return found
    return None


def acls_enforced(rm: ResourceManagerView) -> bool | None:
    """``yarn.acl.enable`` of the running ResourceManager (its ``/conf`` page); None when unknown."""
    text = rm.fetch("/conf")
    if not text:
        return None
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    for prop in root.iter("property"):
        if prop.findtext("name") == "yarn.acl.enable":
            return (prop.findtext("value") or "").strip().lower() == "true"
    return False  # Hadoop's default


def submit_access(rm: ResourceManagerView, scheduler: dict[str, Any], queue: str, user: str,
                  groups: set[str] | None = None) -> dict[str, Any]:
    """May ``user`` submit to ``queue``? ``{"allowed": bool | None, "source", "acl", "detail"}``.

    Asks the ResourceManager (``/ws/v1/cluster/queues/Q/access``, Hadoop 3.2+: its own groups and
    parent queues); where it refuses to answer (an older RM, or one that lets only queue
    administrators ask), evaluates the queue's and its parents' submit and administer ACLs from
    ``/ws/v1/cluster/scheduler`` with ``user``'s groups on this host.
    """
    chain = _queue_chain(scheduler, queue) or []
    leaf_acl = _queue_acls(chain[-1]).get("SUBMIT_APP", "") if chain else ""
    quoted = urllib.parse.quote(user)
    reply = rm.fetch(f"/ws/v1/cluster/queues/{urllib.parse.quote(queue)}/access?user={quoted}"
                     f"&queue-acl-type=SUBMIT_APPLICATIONS&user.name={quoted}")
    if reply:
        try:
            root = ET.fromstring(reply)
        except ET.ParseError:
            root = None
        allowed = root.findtext("allowed") if root is not None else None
        if allowed in ("true", "false"):
            return {"allowed": allowed == "true", "source": "ResourceManager", "acl": leaf_acl,
                    "detail": (root.findtext("diagnostics") or "").strip()}
    if not chain:
        return {"allowed": None, "source": "none", "acl": "", "detail": f"queue {queue!r} not found"}
    groups = local_groups(user) if groups is None else groups
    granted = [q.get("queuePath") or q.get("queueName") for q in chain
               for kind in ("SUBMIT_APP", "ADMINISTER_QUEUE")
               if kind in _queue_acls(q) and acl_allows(_queue_acls(q)[kind], user, groups)]
    if not any("SUBMIT_APP" in _queue_acls(q) for q in chain):
        return {"allowed": None, "source": "none", "acl": "", "detail": "the ResourceManager reports no queue ACLs"}
    detail = (f"granted by {granted[0]}" if granted else
              f"no submit or administer ACL of {', '.join(str(q.get('queuePath') or q.get('queueName')) for q in chain)} "
              f"names {user} or its groups ({', '.join(sorted(groups)) or 'none'})")
    return {"allowed": bool(granted), "source": "queue ACLs", "acl": leaf_acl, "detail": detail}


def describe(urls: list[str], user: str | None = None) -> dict[str, Any]:
    """The ResourceManager, its leaf queues (state, capacities, labels, whether ``user`` may submit) and
    nodes by label, for ``tfos doctor``."""
    rm = ResourceManagerView(urls)
    info = rm.get("info")
    if info is None:
        return {"reachable": False, "urls": urls}
    user = user or submitting_user()
    out: dict[str, Any] = {"reachable": True, "urls": urls, "version": info.get("clusterInfo", {}).get("hadoopVersion"),
                           "queues": [], "nodes": {}, "user": user, "acls_enforced": acls_enforced(rm)}
    scheduler = (rm.get("scheduler") or {}).get("scheduler", {}).get("schedulerInfo", {})

    def leaves(q: dict[str, Any]) -> None:
        children = (q.get("queues") or {}).get("queue") or []
        if not children and q.get("queueName"):
            labels = q.get("nodeLabels") or []
            out["queues"].append({"name": q["queueName"], "state": q.get("state"), "capacity": q.get("capacity"),
                                  "max_capacity": q.get("maxCapacity"),
                                  "labels": [labels] if isinstance(labels, str) else labels,
                                  "default_label": q.get("defaultNodeLabelExpression") or "",
                                  "submit": submit_access(rm, scheduler, q["queueName"], user)})
        for child in children:
            leaves(child)

    leaves(scheduler)
    for node in ((rm.get("nodes") or {}).get("nodes") or {}).get("node", []):
        if node.get("state") != "RUNNING":
            continue
        label = ",".join(node.get("nodeLabels") or []) or "(no label)"
        entry = out["nodes"].setdefault(label, {"nodes": 0, "memory_mb": 0, "vcores": 0, "gpus": 0})
        entry["nodes"] += 1
        entry["memory_mb"] += int(node.get("usedMemoryMB", 0)) + int(node.get("availMemoryMB", 0))
        entry["vcores"] += int(node.get("usedVirtualCores", 0)) + int(node.get("availableVirtualCores", 0))
        entry["gpus"] += _node_gpus(node)
    return out
