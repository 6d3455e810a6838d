"""Roles -> executors, and the cluster spec / TF_CONFIG built from the registrations."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PS = "ps"
CHIEF = "chief"
MASTER = "master"
WORKER = "worker"
EVALUATOR = "evaluator"


@dataclass(frozen=True)
class ClusterTemplate:
    """Which executor plays which role: ``roles[executor_id] == (job_name, task_index)``."""

    roles: tuple[tuple[str, int], ...]

    @classmethod
    def build(cls, num_executors: int, num_ps: int = 0, master_node: str | None = None,
              eval_node: bool = False) -> ClusterTemplate:
        """Assign executors in order: parameter servers, then the master/chief, the evaluator, workers."""
        if num_executors < 1:
            raise ValueError(f"num_executors must be >= 1, got {num_executors}")
        if num_ps < 0:
            raise ValueError(f"num_ps must be >= 0, got {num_ps}")
        if master_node not in (None, CHIEF, MASTER):
            raise ValueError(f"master_node must be None, 'chief' or 'master', got {master_node!r}")
        trainers = num_executors - num_ps - (1 if eval_node else 0)
        if trainers < 1:
            raise ValueError(
                f"num_executors={num_executors} leaves no executor for training: {num_ps} ps"
                f"{' and 1 evaluator' if eval_node else ''} take them all, and at least one chief or "
                f"worker is needed; raise num_executors (and the Spark executors to match) or lower num_ps"
            )
        roles: list[tuple[str, int]] = [(PS, i) for i in range(num_ps)]
        if master_node:
            roles.append((master_node, 0))
        if eval_node:
            roles.append((EVALUATOR, 0))
        roles.extend((WORKER, i) for i in range(num_executors - len(roles)))
        return cls(tuple(roles))

    def __len__(self) -> int:
        return len(self.roles)

    def role(self, executor_id: int) -> tuple[str, int]:
        return self.roles[executor_id]

    def executors_of(self, *job_names: str) -> list[int]:
        return [eid for eid, (job, _) in enumerate(self.roles) if job in job_names]


def cluster_spec(nodes: list[dict[str, Any]]) -> dict[str, list[str]]:
    """``{job_name: ["host:port", ...]}`` ordered by task index, from the registrations."""
    spec: dict[str, list[tuple[int, str]]] = {}
    for node in nodes:
        spec.setdefault(node["job_name"], []).append((node["task_index"], f"{node['host']}:{node['port']}"))
    return {job: [addr for _, addr in sorted(entries)] for job, entries in spec.items()}


def tf_config(spec: dict[str, list[str]], job_name: str, task_index: int) -> str:
    """The TF_CONFIG JSON every TF2 strategy reads.

    The evaluator is not part of the training cluster: it is left out of the cluster
    everyone trains with, and given its own task entry.
    """
    training = {job: list(addrs) for job, addrs in spec.items() if job != EVALUATOR}
    return json.dumps({"cluster": training, "task": {"type": job_name, "index": task_index},
                       "environment": "cloud"})


def worker_counts(spec: dict[str, list[str]], job_name: str, task_index: int) -> tuple[int, int]:
    """``(num_workers, worker_num)``: training workers including the chief, and this node's rank."""
    chiefs = len(spec.get(CHIEF, [])) + len(spec.get(MASTER, []))
    num_workers = chiefs + len(spec.get(WORKER, []))
    if job_name in (CHIEF, MASTER):
        return num_workers, 0
    if job_name == WORKER:
        return num_workers, chiefs + task_index
    return num_workers, -1
