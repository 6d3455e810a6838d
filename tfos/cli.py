"""The ``tfos`` command.

    tfos doctor [--master M] [--executors N] [--hdfs URL] [--queue Q] [--conf K=V ...] [--json]
    tfos zip [-o tfos.zip]                       tfos for spark-submit --py-files
    tfos pack-env [-o env.tar.gz] [--prefix V]   the venv for spark-submit --archives env.tar.gz#env

``doctor`` checks, on the driver and on every executor (one Spark task per executor), whether
HDFS is reachable from Python (hdfs-native, tfos's own I/O layer) and from TensorFlow
(tensorflow-io registered, libhdfs loadable with the environment tfos gives TF processes), which
I/O path tfos will use there, and what to install or set when something is missing. It exits
with status 1 when ``--hdfs`` is unreachable from any of them (or the executors could not be
checked), else 0. With ``--master yarn`` (or ``HADOOP_CONF_DIR`` holding a yarn-site.xml) it also
reports the YARN ResourceManager (reachable or not), its queues with their node labels and
capacities, whether the user may submit to each (the queue's submit ACL, as the ResourceManager
answers; exit status 1 when it refuses ``--queue``), and the nodes of each label; the executor checks then run inside YARN containers of
``--queue``, so they test the executors' Python environment and HDFS access there.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.metadata
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["doctor", "main", "probe_location"]

_TF_PROBE = "_tf-probe"
_RESULT = "TFOS_PROBE "
TENSORFLOW_IO_PIN = "tensorflow-io==0.37.1"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tcp_error(url: str, timeout: float) -> str | None:
    """None when the NameNode of ``url`` accepts a TCP connection, else why not (names the address)."""
    from tfos.io.filesystem import split_url

    netloc = split_url(url)[1].rpartition("@")[2]
    if not netloc:
        return None
    host, _, port = netloc.partition(":")
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return None  # an HA name service, resolved by the HDFS client from the Hadoop configuration
    try:
        with socket.create_connection((host, int(port or 8020)), timeout=timeout):
            return None
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return f"cannot reach NameNode {host}:{port or 8020}: {reason}"


# ---------------------------------------------------------------------------- TensorFlow side
def _tf_probe(url: str | None, timeout: float) -> dict[str, Any]:
    """Runs in a child process with a TF node's environment: can TensorFlow reach ``url``?"""
    from tfos.io.hadoop_env import libhdfs_path, libhdfs_problems, libjvm_path
    from tfos.io.tf_dataset import enable_tensorflow_io

    out: dict[str, Any] = {
        "tensorflow": None, "tensorflow_io": _version("tensorflow-io"), "hdfs_registered": False,
        "libhdfs": libhdfs_path(os.environ), "libjvm": libjvm_path(os.environ),
        "classpath_entries": len([p for p in os.environ.get("CLASSPATH", "").split(os.pathsep) if p]),
        "libhdfs_problems": libhdfs_problems(os.environ), "error": None, "reachable": None,
    }
    try:
        import tensorflow as tf

        out["tensorflow"] = tf.__version__
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        out["error"] = f"TensorFlow does not import: {_first_line(exc)}"
        return out
    if out["tensorflow_io"] is None:
        out["error"] = "tensorflow-io is not installed"
        return out
    try:
        enable_tensorflow_io(os.environ)
        out["hdfs_registered"] = True
    except Exception as exc:  # noqa: BLE001
        out["error"] = _first_line(exc)
        return out
    if url:
        tcp = _tcp_error(url, 5.0)
        if tcp:
            out["reachable"], out["error"] = False, tcp
            return out
        result: dict[str, Any] = {}

        def _stat() -> None:
            try:
                result["exists"] = bool(tf.io.gfile.exists(url))
            except BaseException as exc:  # noqa: BLE001
                result["error"] = _first_line(exc)

        worker = threading.Thread(target=_stat, daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            out["reachable"], out["error"] = False, f"tf.io.gfile.exists({url}) did not return within {timeout:g} s"
        elif "error" in result:
            out["reachable"], out["error"] = False, result["error"]
        else:
            out["reachable"], out["path_exists"] = True, result["exists"]
    return out


def _run_tf_probe(url: str | None, env: dict[str, str], timeout: float) -> dict[str, Any]:
    env = dict(env, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cmd = [sys.executable, "-m", "tfos.cli", _TF_PROBE, url or "", str(timeout)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 60,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"the TensorFlow check did not finish within {timeout + 60:g} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT):
            return json.loads(line[len(_RESULT):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"the TensorFlow check exited with {proc.returncode}: {tail}"}


# ---------------------------------------------------------------------------- one location
def probe_location(url: str | None, tf_timeout: float = 120.0, label: str = "driver") -> dict[str, Any]:
    """Check HDFS access from this process (Python) and from a TF process started with tfos's environment."""
    import tfos
    from tfos.io.filesystem import FileSystem, HdfsConnectionError
    from tfos.io.hadoop_env import hadoop_env, hadoop_home

    env = dict(os.environ)
    added = hadoop_env(env)
    env.update(added)
    report: dict[str, Any] = {
        "label": label, "host": socket.gethostname(), "pid": os.getpid(), "python": sys.version.split()[0],
        "tfos": tfos.__version__, "container": os.environ.get("CONTAINER_ID"),
        "hadoop_home": hadoop_home(os.environ), "env_set_by_tfos": sorted(added),
        "hdfs_native": _version("hdfs-native"), "python_reachable": None, "python_error": None,
    }
    if url:
        if report["hdfs_native"] is None:
            report["python_reachable"], report["python_error"] = False, "hdfs-native is not installed"
        else:
            begin = time.monotonic()
            try:
                with FileSystem(backend="native", connect_timeout=5.0, rpc_timeout=15.0) as fs:
                    report["path_exists"] = fs.exists(url)
                report["python_reachable"] = True
            except (HdfsConnectionError, OSError, ValueError) as exc:
                report["python_reachable"], report["python_error"] = False, _first_line(exc)
            report["python_seconds"] = round(time.monotonic() - begin, 2)
    report["tf"] = _run_tf_probe(url, env, tf_timeout)
    report["path"] = _chosen_path(report, url)
    report["advice"] = _advice(report, url)
    return report


def _tf_ok(report: dict[str, Any], url: str | None) -> bool:
    tf = report["tf"]
    return bool(tf.get("hdfs_registered")) and (not url or bool(tf.get("reachable")))


def _chosen_path(report: dict[str, Any], url: str | None) -> str:
    if _tf_ok(report, url):
        return "tensorflow_io"
    if report["hdfs_native"] and (not url or report["python_reachable"]):
        return "tfos"
    return "none"


def _advice(report: dict[str, Any], url: str | None) -> list[str]:
    tf = report["tf"]
    advice = []
    if not report["hdfs_native"]:
        advice.append("pip install hdfs-native (tfos's HDFS client: no JVM or libhdfs needed)")
    if url and report["hdfs_native"] and not report["python_reachable"]:
        advice.append(f"HDFS {url} is unreachable from this host: check the NameNode address and port, "
                      f"that the NameNode runs, and firewalls ({report['python_error']})")
    if tf.get("tensorflow") is None:
        advice.append(f"TensorFlow does not run here: {tf.get('error')}")
    elif tf.get("tensorflow_io") is None:
        advice.append(f"optional: pip install '{TENSORFLOW_IO_PIN}' (TensorFlow <= 2.17.1) so TensorFlow reads "
                      "hdfs:// itself; without it tfos streams TFRecords and copies checkpoints through hdfs-native")
    elif not tf.get("hdfs_registered"):
        for problem in tf.get("libhdfs_problems") or [tf.get("error")]:
            advice.append(f"optional, for TensorFlow's own hdfs://: {problem}")
    elif url and not tf.get("reachable") and report["python_reachable"]:
        advice.append(f"TensorFlow (libhdfs) cannot reach {url} although hdfs-native can: {tf.get('error')}; "
                      "check CLASSPATH (the Hadoop jars and configuration directory) or use --hdfs_io tfos")
    return advice


# ---------------------------------------------------------------------------- doctor
def _executor_count(sc: Any, requested: int | None) -> int:
    if requested is not None:
        return requested
    instances = sc.getConf().get("spark.executor.instances")
    if instances:
        return max(1, int(instances))
    if sc.master.startswith("local"):
        return 1
    infos = sc._jsc.sc().statusTracker().getExecutorInfos()
    return max(1, len(infos) - 1)  # minus the driver


def _probe_executors(sc: Any, count: int, url: str | None, tf_timeout: float) -> tuple[list[dict[str, Any]], str]:
    """One probe task per executor (barrier mode, so each lands on its own executor when slots allow)."""

    def task(index: int, _: Any) -> Any:
        from tfos.cli import probe_location

        yield json.dumps(probe_location(url, tf_timeout, label=f"executor task {index}"))

    rdd = sc.parallelize(range(count), count)
    note = ""
    try:
        rows = rdd.barrier().mapPartitionsWithIndex(task).collect()
    except Exception as exc:  # noqa: BLE001 - e.g. fewer task slots than executors asked for
        note = (f"barrier mode failed ({_first_line(exc)[:200]}); ran {count} ordinary tasks, "
                "which may share executors")
        rows = rdd.mapPartitionsWithIndex(task).collect()
    return [json.loads(row) for row in rows], note


def _format(report: dict[str, Any], url: str | None) -> list[str]:
    tf = report["tf"]
    where = report["host"] + (f", container {report['container']}" if report.get("container") else "")
    lines = [f"{report['label']} ({where}, pid {report['pid']}, Python {report['python']}, tfos {report['tfos']})"]
    if report["hadoop_home"]:
        added = ", ".join(report["env_set_by_tfos"]) or "nothing (already set)"
        lines.append(f"  HADOOP_HOME {report['hadoop_home']}: tfos sets {added} for TF processes")
    else:
        lines.append("  no HADOOP_HOME/HADOOP_PREFIX: tfos sets nothing for libhdfs")
    native = f"hdfs-native {report['hdfs_native']}" if report["hdfs_native"] else "hdfs-native not installed"
    if url:
        if report["python_reachable"]:
            state = f"reachable ({report.get('python_seconds', 0):.2f} s)"
            if report.get("path_exists") is False:
                state += f"; {url} does not exist yet"
        else:
            state = f"UNREACHABLE: {report['python_error']}"
        lines.append(f"  Python -> HDFS ({native}): {state}")
    else:
        lines.append(f"  Python -> HDFS: {native}")
    tf_name = f"TensorFlow {tf.get('tensorflow')}" if tf.get("tensorflow") else "TensorFlow (unavailable)"
    tio = f"tensorflow-io {tf.get('tensorflow_io')}" if tf.get("tensorflow_io") else "no tensorflow-io"
    if tf.get("hdfs_registered"):
        state = "hdfs:// registered, libhdfs loaded"
        if url:
            state += "; reachable" if tf.get("reachable") else f"; UNREACHABLE: {tf.get('error')}"
    elif tf.get("tensorflow_io") and tf.get("libhdfs_problems"):
        state = "not usable: the libhdfs environment is incomplete (see below)"
    else:
        state = f"not available: {tf.get('error')}"
    lines.append(f"  TensorFlow -> HDFS ({tf_name}, {tio}): {state}")
    lines.append(f"  libhdfs: {tf.get('libhdfs') or 'not found'}; libjvm: {tf.get('libjvm') or 'not found'}; "
                 f"CLASSPATH: {tf.get('classpath_entries', 0)} entries")
    described = {"tensorflow_io": "tensorflow_io (TensorFlow reads and writes hdfs:// itself)",
                 "tfos": "tfos (hdfs-native: TFRecords streamed into tf.data, checkpoints and exports copied)",
                 "none": "none: HDFS cannot be used from here"}
    lines.append(f"  --hdfs_io auto uses: {described[report['path']]}")
    lines += [f"  to do: {item}" for item in report["advice"]]
    return lines


def doctor(args: argparse.Namespace) -> int:
    """Run the checks; print a report (text or JSON); return the exit status."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    url = args.hdfs.rstrip("/") if args.hdfs else None
    if url and "://" not in url:
        print(f"tfos doctor: --hdfs must be a URL such as hdfs://namenode:8020, got {args.hdfs!r}", file=sys.stderr)
        return 2
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        driver_future = pool.submit(probe_location, url, args.timeout, "driver")
        executors: list[dict[str, Any]] = []
        note = ""
        spark_error = None
        if args.executors != 0:
            try:
                from pyspark import SparkConf, SparkContext

                conf = SparkConf().setAppName("tfos doctor")
                if args.master:
                    conf.setMaster(args.master)
                if args.queue:
                    conf.set("spark.yarn.queue", args.queue)
                for item in args.conf or []:
                    key, _, value = item.partition("=")
                    conf.set(key, value)
                conf.setIfMissing("spark.master", "local[2]")
                conf.setIfMissing("spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures", "3")
                conf.setIfMissing("spark.scheduler.barrier.maxConcurrentTasksCheck.interval", "5s")
                sc = SparkContext.getOrCreate(conf)
                try:
                    executors, note = _probe_executors(sc, _executor_count(sc, args.executors), url, args.timeout)
                finally:
                    sc.stop()
            except Exception as exc:  # noqa: BLE001 - reported below, exit status 1
                spark_error = _first_line(exc)[:500]
        driver = driver_future.result()
    yarn_view = _yarn_view(args)
    reports = [driver, *executors]
    unreachable = [r["label"] for r in reports if r["path"] == "none"] if url else []
    yarn_down = yarn_view is not None and not yarn_view["reachable"]
    refused = bool(yarn_view and yarn_view["reachable"] and any(
        q["name"] == args.queue and _submit_line(q, yarn_view)[1] for q in yarn_view["queues"]))
    status = 1 if unreachable or spark_error or yarn_down or refused else 0
    if args.json:
        print(json.dumps({"hdfs": url, "reports": reports, "unreachable_from": unreachable, "note": note,
                          "spark_error": spark_error, "yarn": yarn_view, "status": status}, indent=2))
        return status
    if yarn_view is not None:
        print("\n".join(_format_yarn(yarn_view, args.queue)))
        print()
    print(f"tfos doctor{f': HDFS {url}' if url else ' (no --hdfs URL given: checking installations only)'}")
    for report in reports:
        print()
        print("\n".join(_format(report, url)))
    print()
    if note:
        print(f"note: {note}")
    if spark_error:
        print(f"executors: NOT CHECKED, the Spark job failed: {spark_error}")
    if url:
        if unreachable:
            print(f"result: {url} is UNREACHABLE from {', '.join(unreachable)}")
        else:
            paths = sorted({r["path"] for r in reports})
            print(f"result: {url} is reachable from the driver and {len(executors)} executor task(s); "
                  f"I/O path: {', '.join(paths)}")
    else:
        print("result: installation checked; pass --hdfs hdfs://namenode:port to test access")
    return status


def _yarn_view(args: argparse.Namespace) -> dict[str, Any] | None:
    """The YARN section of the report, when this doctor run is about YARN (None otherwise)."""
    from tfos.cluster import yarn

    conf_dir = os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")
    about_yarn = (args.master or "").startswith("yarn") or bool(conf_dir and os.path.isfile(f"{conf_dir}/yarn-site.xml"))
    if not about_yarn:
        return None
    if not conf_dir:
        return {"reachable": False, "urls": [], "error": "HADOOP_CONF_DIR (or YARN_CONF_DIR) is not set: "
                "point it at the directory holding yarn-site.xml, as spark-submit --master yarn needs"}
    return yarn.describe(yarn.rm_web_urls_from_conf_dir(conf_dir))


def _format_yarn(view: dict[str, Any], queue: str | None) -> list[str]:
    if not view["reachable"]:
        return [f"YARN: ResourceManager UNREACHABLE at {', '.join(view['urls']) or '(no address)'}"
                + (f": {view['error']}" if view.get("error") else "; check yarn.resourcemanager.webapp.address "
                   "in yarn-site.xml and that the ResourceManager runs")]
    lines = [f"YARN: ResourceManager {view['urls'][0]} (Hadoop {view['version']}) reachable"]
    names = [q["name"] for q in view["queues"]]
    todo = []
    for q in view["queues"]:
        mark = " <- --queue" if q["name"] == queue else ""
        lines.append(f"  queue {q['name']}: {q['state']}, capacity {q['capacity']}% (max {q['max_capacity']}%), "
                     f"labels {','.join(q['labels']) or 'none'}, default label {q['default_label'] or 'none'}{mark}")
        line, refused = _submit_line(q, view)
        lines.append(f"    {line}")
        if refused and q["name"] == queue:
            todo.append(f"  to do: {view['user']} may not submit to queue {queue!r} (its submit ACL "
                        f"{q['submit']['acl']!r}); ask the queue's administrator to add you to "
                        f"yarn.scheduler.capacity.root.{queue}.acl_submit_applications, or use a queue marked "
                        "'allowed' above")
    if queue and queue not in names:
        todo.append(f"  to do: queue {queue!r} does not exist; use one of {', '.join(names)}")
    lines += todo
    for label, n in sorted(view["nodes"].items()):
        lines.append(f"  nodes {label}: {n['nodes']} node(s), {n['memory_mb']} MB, {n['vcores']} vcores"
                     + (f", {n['gpus']} yarn.io/gpu" if n["gpus"] else ""))
    return lines


def _submit_line(q: dict[str, Any], view: dict[str, Any]) -> tuple[str, bool]:
    """The doctor's line on whether the user may submit to queue ``q``, and whether YARN will refuse it."""
    access = q.get("submit") or {}
    user, enforced = view.get("user"), view.get("acls_enforced")
    acl = f"submit ACL {access.get('acl')!r}" if access.get("acl") else "submit ACL unknown"
    source = access.get("source", "none")
    detail = f": {access['detail']}" if access.get("detail") else ""
    if access.get("allowed") is None:
        return f"submit as {user}: UNKNOWN ({source}{detail})", False
    if access["allowed"]:
        return f"submit as {user}: allowed ({source}, {acl})", False
    if enforced is False:
        return (f"submit as {user}: allowed, but only because yarn.acl.enable=false: the {acl} excludes {user} "
                f"({source}{detail})"), False
    return f"submit as {user}: REFUSED ({source}, {acl}{detail})", True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfos", description="tfos command-line tools")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="check HDFS access from the driver and every executor",
                       description="Check HDFS access from Python (hdfs-native) and TensorFlow (tensorflow-io, "
                                   "libhdfs) on the driver and on each executor; say what to install or set.")
    d.add_argument("--master", help="Spark master (default: spark-submit's, else local[2])")
    d.add_argument("--executors", type=int, default=None,
                   help="executors to check, one task each (default: spark.executor.instances, or the executors "
                        "registered; 0: driver only)")
    d.add_argument("--hdfs", help="HDFS URL to test, e.g. hdfs://namenode:8020/user/me")
    d.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for each TensorFlow check")
    d.add_argument("--json", action="store_true", help="print the reports as JSON")
    d.add_argument("--queue", help="YARN queue the executor checks run in (spark.yarn.queue)")
    d.add_argument("--conf", action="append", metavar="K=V", help="extra Spark setting (repeatable), e.g. "
                   "spark.executorEnv.PYSPARK_PYTHON=./env/bin/python")
    z = sub.add_parser("zip", help="zip the tfos package for spark-submit --py-files")
    z.add_argument("-o", "--output", default="tfos.zip", help="zip to write (default tfos.zip)")
    e = sub.add_parser("pack-env", help="pack this virtual environment for spark-submit --archives (venv-pack)",
                       description="Pack a virtual environment with venv-pack, for --archives env.tar.gz#env and "
                                   "PYSPARK_PYTHON=./env/bin/python. Every node needs the same Python "
                                   "interpreter at the same path as this machine.")
    e.add_argument("-o", "--output", default="env.tar.gz", help="archive to write (.tar.gz, .tar or .zip)")
    e.add_argument("--prefix", default=None, help="venv to pack (default: the one running tfos)")
    e.add_argument("--compress-level", type=int, default=1, help="gzip level 0-9 (default 1: fast)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tfos`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_TF_PROBE]:  # internal: the TensorFlow half of a check, in a child process
        url = argv[1] if len(argv) > 1 and argv[1] else None
        result = _tf_probe(url, float(argv[2]) if len(argv) > 2 else 60.0)
        print(_RESULT + json.dumps(result), flush=True)
        os._exit(0)  # do not wait for libhdfs's JVM threads
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        return doctor(args)
    if args.command in ("zip", "pack-env"):
        return _package(args)
    return 2


def _package(args: argparse.Namespace) -> int:
    from tfos import packaging

    try:
        if args.command == "zip":
            out = packaging.build_zip(args.output)
            print(f"wrote {out}: use spark-submit --py-files {out}")
        else:
            out = packaging.pack_env(args.output, args.prefix, args.compress_level)
            print(f"wrote {out} ({out.stat().st_size / 2**20:.0f} MB): use spark-submit --archives {out}#env "
                  f"--conf spark.yarn.appMasterEnv.PYSPARK_PYTHON=./env/bin/python "
                  f"--conf spark.executorEnv.PYSPARK_PYTHON=./env/bin/python")
    except packaging.PackagingError as exc:
        print(f"tfos {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
