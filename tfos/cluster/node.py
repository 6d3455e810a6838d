"""Executor side of a cluster start: reserve a port, register, start and supervise the TF process."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import traceback
from dataclasses import replace

from tfos.cluster import lifetime, template
from tfos.cluster.context import NodeContext
from tfos.cluster.gpus import (
    GpuAssignment,
    assign_gpus,
    host_local_index,
    requested_gpus,
    spark_task_resources,
)
from tfos.cluster.input_mode import InputMode
from tfos.cluster.node_logging import NodeLogAdapter
from tfos.cluster.payload import PAYLOAD_FILE, NodeConfig, PayloadForProcess
from tfos.cluster.spawner import SpawnedProcess, SpawnRequest, TFProcessSpawner
from tfos.cluster.vouching import Voucher
from tfos.io.hadoop_env import hadoop_env
from tfos.reservation.client import ReservationClient
from tfos.reservation.server import FAILED

logger = logging.getLogger(__name__)


class NodeStartError(RuntimeError):
    """A node could not start, or its TF process failed; the message names the node."""


def outbound_ip(target: tuple[str, int]) -> str:
    """The local address this host uses to reach ``target`` (the driver): what other nodes can dial."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(target)
        return probe.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())
    finally:
        probe.close()


def _reserve_port(port: int = 0, listen: bool = True) -> socket.socket:
    """A bound socket holding ``port`` (0: any free one) until the TF process takes it over. The feed
    hub's is bound but not listening: a feed task that comes too early is refused (and retries)
    instead of being accepted and then cut off when the node hands the port over."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("", port))
    except OSError as exc:
        sock.close()
        raise NodeStartError(f"cannot bind port {port} (TENSORBOARD_PORT) on {socket.gethostname()}: {exc}; "
                             "unset TENSORBOARD_PORT or pick a free port") from exc
    if listen:
        sock.listen(1)
    return sock


class Node:
    """One TF node on one executor: registration, TF process start and supervision."""

    def __init__(self, config: NodeConfig, executor_id: int):
        if not 0 <= executor_id < len(config.roles):
            raise NodeStartError(f"executor id {executor_id} is outside the cluster's {len(config.roles)} nodes; "
                                 "the start stage must have exactly num_executors partitions")
        self.config = config
        self.executor_id = executor_id
        self.job_name, self.task_index = config.roles[executor_id]
        self.name = f"{self.job_name}:{self.task_index}"
        self.log = NodeLogAdapter(logger, {"node": self.name})
        self.client = ReservationClient(config.server_address, config.secret)
        self.process: SpawnedProcess | None = None
        self.gpu: GpuAssignment | None = None
        self.feed_dir = ""
        self.node_dir = ""
        self.owner = os.getpid()

    # ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Register, wait for the cluster spec, start the TF process; supervise it where required."""
        cfg = self.config
        host = outbound_ip(cfg.server_address)
        port_sock = _reserve_port()
        tb_sock = _reserve_port(_tensorboard_port()) if cfg.tensorboard and (self.job_name, self.task_index) == \
            cfg.tensorboard_node() else None
        tb_port = tb_sock.getsockname()[1] if tb_sock else None
        port = port_sock.getsockname()[1]
        # the feed hub's port (tfos.feed.hub), known to the driver from the registration like the TF port
        hub_sock = _reserve_port(listen=False) if cfg.input_mode == InputMode.SPARK and \
            self.job_name not in (template.PS, template.EVALUATOR) else None
        node_dir = self.node_dir = tempfile.mkdtemp(prefix=f"tfos-{cfg.cluster_id}-{self.executor_id}-",
                                                    dir=container_tmp())
        jvm = lifetime.executor_jvm_pid()
        self.owner = jvm or os.getpid()
        feed_dir = self.feed_dir = os.path.join(node_dir, "feed")
        os.makedirs(feed_dir, mode=0o700)
        from tfos.feed.hub_link import hub_socket_path
        self.client.register({
            "executor_id": self.executor_id, "host": host, "port": port, "job_name": self.job_name,
            "task_index": self.task_index, "pid": os.getpid(), "tb_port": tb_port,
            "feed_port": hub_sock.getsockname()[1] if hub_sock else None,
            "feed_socket": hub_socket_path(feed_dir) if hub_sock else None,
            "hostname": socket.gethostname(), "node_dir": node_dir,
            "spark_executor_id": lifetime.spark_executor_id(jvm), "container_id": os.environ.get("CONTAINER_ID"),
        })
        self.log.info("registered %s:%d; waiting for the other nodes", host, port)
        try:
            nodes = self.client.await_spec(self.executor_id, cfg.reservation_timeout)
            spec = template.cluster_spec(nodes)
            num_workers, worker_num = template.worker_counts(spec, self.job_name, self.task_index)
            self.gpu = assign_gpus(requested_gpus(cfg.tf_args), spark_task_resources(),
                                   worker_index=host_local_index(nodes, self.executor_id), job_name=self.job_name)
        except BaseException as exc:
            if hub_sock is not None:
                hub_sock.close()
            self._remove_node_dir()
            self._report_start_failure(exc)
            raise
        try:
            self._launch(nodes, spec, num_workers, worker_num, host, port_sock, tb_sock, tb_port, node_dir, feed_dir,
                         hub_sock)
        except BaseException as exc:
            self.gpu.release()
            if cfg.input_mode == InputMode.SPARK:
                from tfos.feed.registry import unregister_local_node

                unregister_local_node(cfg.cluster_id, self.job_name, self.task_index)
            self._remove_node_dir()
            self._report_start_failure(exc)
            raise

    def _report_start_failure(self, exc: BaseException) -> None:
        """Tell the driver why this node could not start (GPU assignment, the launcher, ...): the
        Spark task's own error reaches it late, after Spark's retries, and reads as something else."""
        if isinstance(exc, NodeStartError | KeyboardInterrupt | SystemExit):
            return  # supervise() reported the TF process's end itself; or the task is being killed
        error = "".join(traceback.format_exception(exc)).rstrip()
        try:
            self.client.report(self.executor_id, FAILED, error=f"{self.name} failed before its TF process "
                                                               f"started:\n{error}")
        except Exception as report_exc:  # noqa: BLE001 - the driver may be gone; the task error carries it
            self.log.warning("could not report the start failure to the driver: %s", report_exc)

    def _launch(self, nodes: list[dict], spec: dict[str, list[str]], num_workers: int, worker_num: int, host: str,
                port_sock: socket.socket, tb_sock: socket.socket | None, tb_port: int | None, node_dir: str,
                feed_dir: str, hub_sock: socket.socket | None = None) -> None:
        cfg = self.config
        tb_url = next((f"http://{n['host']}:{n['tb_port']}" for n in nodes if n.get("tb_port")), None)
        ctx = NodeContext(
            executor_id=self.executor_id, job_name=self.job_name, task_index=self.task_index,
            cluster_spec=spec, num_workers=num_workers, worker_num=worker_num,
            default_fs=cfg.default_fs, working_dir=cfg.working_dir, cluster_id=cfg.cluster_id,
            input_mode=cfg.input_mode, feed_dir=feed_dir, tensorboard_url=tb_url, log_dir=cfg.log_dir,
            gpus=list(self.gpu.devices) if self.gpu else [], restart_count=cfg.restart_count,
            _hub_port=hub_sock.getsockname()[1] if hub_sock else None,
        )
        pass_fds: tuple[int, ...] = ()
        if cfg.release_port:
            port_sock.close()
        else:
            ctx = replace(ctx, _port_fd=port_sock.fileno())
            pass_fds = (port_sock.fileno(),)
        for sock in (tb_sock, hub_sock):  # the TF process binds these ports itself
            if sock is not None:
                sock.close()
        env = self._process_env(spec)
        if self.gpu is not None:
            env.update(self.gpu.env())
        payload = PayloadForProcess(cfg, ctx, tb_port)
        payload_path = os.path.join(node_dir, PAYLOAD_FILE)
        from pyspark import cloudpickle

        fd = os.open(payload_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            cloudpickle.dump(payload, f)
        spawner = cfg.spawner or TFProcessSpawner()
        self.process = spawner.spawn(SpawnRequest(self.name, payload_path, env, os.getcwd(), pass_fds))
        if not cfg.release_port:
            port_sock.close()
        self.log.info("started TF process pid %d (TF_CONFIG task %s)", self.process.pid, self.name)

        background = cfg.input_mode == InputMode.SPARK and self.job_name not in (template.PS, template.EVALUATOR)
        if background:
            from tfos.feed.registry import register_local_node

            register_local_node(cfg.cluster_id, self.executor_id, self.job_name, self.task_index, feed_dir,
                                pid=self.process.pid)
            threading.Thread(target=self.supervise, name=f"tfos-supervise-{self.name}", daemon=True).start()
        else:
            self.supervise(raise_on_failure=True)

    def _process_env(self, spec: dict[str, list[str]]) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.config.env)
        env["TF_CONFIG"] = template.tf_config(spec, self.job_name, self.task_index)
        env.setdefault("TF_USE_LEGACY_KERAS", "1")
        env["PYTHONUNBUFFERED"] = "1"
        env["TFOS_NODE"] = self.name
        env["TFOS_SYS_PATH"] = os.pathsep.join(sys.path)
        # `python -m tfos...` must find tfos before it runs: a --py-files zip is on sys.path only
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env[lifetime.OWNER_ENV] = str(self.owner)
        env.update(hadoop_env(env))  # CLASSPATH and libjvm/libhdfs paths when HADOOP_HOME is set
        return env

    def supervise(self, raise_on_failure: bool = False) -> None:
        """Wait for the TF process; report an abnormal exit the process could not report itself.

        Afterwards the node's directory is removed; in InputMode.SPARK only once the node left the
        feed registry and the feed tasks feeding it have read its exit state there.
        """
        try:
            self._wait_and_report(raise_on_failure)
        finally:
            if not raise_on_failure and self.feed_dir:  # InputMode.SPARK: feed tasks find nodes in the registry
                from tfos.feed.registry import retire_local_node

                try:  # no later feed task picks this node; those feeding it read its exit state first
                    retire_local_node(self.config.cluster_id, self.job_name, self.task_index, self.feed_dir)
                except Exception as exc:  # noqa: BLE001 - the directory still goes
                    self.log.warning("could not retire the node's feed registry entry: %s", exc)
            self._remove_node_dir()  # payload (secret, pickled main), feed sockets and spills

    def _wait_and_report(self, raise_on_failure: bool) -> None:
        assert self.process is not None
        # the driver hears from us that the process lives even while its own Python threads cannot run
        voucher = Voucher(self.client, self.executor_id, self.process.pid, self.config.heartbeat_interval,
                          self.name).start()
        try:
            code = self.process.wait()
        finally:
            voucher.stop()
            if self.gpu is not None:
                self.gpu.release()  # the GPUs are free for the next node on this host
        if code == 0:
            self.log.info("TF process exited normally")
            return
        reason = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        message = f"TF process of {self.name} (executor {self.executor_id}, pid {self.process.pid}) {reason}"
        self.log.error(message)
        from tfos.feed.registry import mark_tf_failed

        mark_tf_failed(self.feed_dir, message)  # a feed task waiting on this node fails at once
        try:
            self.client.report(self.executor_id, FAILED, error=message)
        except Exception as exc:  # noqa: BLE001 - the driver may already be gone; the task error carries it
            self.log.warning("could not report the failure to the driver: %s", exc)
        if raise_on_failure:
            raise NodeStartError(message + "; see the driver's exception or this executor's stderr for the "
                                 "node's traceback")

    def _remove_node_dir(self) -> None:
        if self.node_dir:
            shutil.rmtree(self.node_dir, ignore_errors=True)


def _tensorboard_port() -> int:
    """``TENSORBOARD_PORT`` from the executor's environment (as TensorFlowOnSpark honours it), else any free port."""
    value = os.environ.get("TENSORBOARD_PORT", "")
    if not value:
        return 0
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise NodeStartError(f"TENSORBOARD_PORT={value!r} is not a port number (1-65535)")
    return int(value)


def container_tmp() -> str | None:
    """Inside a YARN container, its own ``tmp`` (YARN deletes it with the container); else the system's."""
    if os.environ.get("CONTAINER_ID") and os.path.isdir("tmp"):
        return os.path.abspath("tmp")
    return None


def start_task(config: NodeConfig, partition: int) -> None:
    """Entry point of one start task (one Spark partition = one executor = one node)."""
    Node(config, partition).start()
