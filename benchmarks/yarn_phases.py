"""Where the time of a tfos application on YARN went, from spark-submit's output and YARN's logs.

    python benchmarks/yarn_phases.py APP_ID [--submit-log FILE]

Reads the aggregated logs (``scripts/hadoop.sh yarn-logs APP_ID``) and, when given, the
spark-submit client's output (``--submit-log``), and prints the wall-clock time of each phase:
upload of the jars, archives and files (client), ApplicationMaster start, executors registered,
TF cluster up, training and shutdown, application end. Timestamps come from the log lines of
Spark (``yy/MM/dd HH:mm:ss``) and tfos (``yyyy-MM-dd HH:mm:ss,SSS``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPARK_TS = re.compile(r"^(\d\d/\d\d/\d\d \d\d:\d\d:\d\d) ")
TFOS_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ ")

# (phase name, pattern of the line that ends it, where it is logged)
MARKS = [
    ("client: set-up and upload", r"Client: Submitting application", "submit"),
    ("YARN: schedule and launch the ApplicationMaster", r"ApplicationMaster: (ApplicationAttemptId|Preparing Local resources)", "logs"),
    ("driver: Python and SparkContext up", r"SparkContext: Running Spark version", "logs"),
    ("YARN: executors allocated and registered", r"starting TF cluster", "logs"),
    ("tfos: TF nodes registered (cluster up)", r"TF cluster \S+ is up", "logs"),
    ("tfos: training, export, shutdown", r"TF cluster \S+ shut down", "logs"),
    ("driver: evaluation and application end", r"Final app status", "logs"),
]


def _stamp(line: str) -> datetime | None:
    m = SPARK_TS.match(line)
    if m:
        return datetime.strptime(m.group(1), "%y/%m/%d %H:%M:%S")
    m = TFOS_TS.match(line)
    if m:
        return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    return None


def _first(text: str, pattern: str) -> datetime | None:
    regex = re.compile(pattern)
    for line in text.splitlines():
        if regex.search(line):
            stamp = _stamp(line)
            if stamp:
                return stamp
    return None


def phases(submit: str, logs: str) -> list[tuple[str, float | None]]:
    """(phase, seconds) in order; None where a mark was not found."""
    stamps = [s for s in map(_stamp, (submit or logs).splitlines()) if s]
    start = min(stamps) if stamps else None  # the logs are ordered by container, not by time
    out = []
    previous = start
    for name, pattern, where in MARKS:
        mark = _first(submit if where == "submit" else logs, pattern)
        out.append((name, (mark - previous).total_seconds() if mark and previous else None))
        previous = mark or previous
    total = (previous - start).total_seconds() if previous and start else None
    out.append(("total", total))
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("app_id")
    p.add_argument("--submit-log", help="spark-submit's output (stdout and stderr) for the client phase")
    args = p.parse_args(argv)
    logs = subprocess.run(["bash", str(REPO / "scripts" / "hadoop.sh"), "yarn-logs", args.app_id],
                          capture_output=True, text=True, timeout=300).stdout
    submit = Path(args.submit_log).read_text() if args.submit_log else ""
    for name, seconds in phases(submit, logs):
        print(f"{name:52s} {'-' if seconds is None else f'{seconds:6.0f} s'}")
    accuracy = re.findall(r"test accuracy: ([0-9.]+)", logs)
    if accuracy:
        print(f"{'test accuracy':52s} {accuracy[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
