"""Exploratory analysis of Criteo TSV data with Spark SQL.

    spark-submit examples/criteo/criteo_eda.py --data criteo/train.tsv

Prints: the row count and click-through rate; per categorical column its distinct values and
missing share; a histogram (log2 buckets) of one integer column with the CTR of each bucket;
and the categorical value pairs that occur together most often (over the pairs of
``--pair_columns``), with their CTR. Paths without a scheme resolve against ``fs.defaultFS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from itertools import combinations
from typing import Any

import criteo_data

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Criteo EDA with Spark SQL")
    p.add_argument("--data", default=os.path.join(DATA, "train_head1000.tsv"),
                   help="TSV files (comma-separated), directory or glob")
    p.add_argument("--hist_column", default="I5", choices=criteo_data.INT_NAMES, help="integer column to histogram")
    p.add_argument("--pair_columns", default="C1,C2,C5,C6,C8,C9,C14,C17,C20,C22,C23,C25",
                   help="categorical columns whose value pairs are counted")
    p.add_argument("--top", type=int, default=10, help="rows of the co-occurrence table")
    return p.parse_args(argv)


def overview(spark: Any) -> tuple[int, float]:
    """(rows, CTR) of the ``criteo`` view."""
    row = spark.sql("SELECT count(*) AS n, avg(label) AS ctr FROM criteo").first()
    return int(row["n"]), float(row["ctr"] or 0.0)


def categorical_stats(spark: Any) -> list[tuple[str, int, float]]:
    """(column, distinct non-missing values, missing share) for C1-C26, in one pass."""
    exprs = ", ".join(f"count(DISTINCT {c}) AS d_{c}, avg(CASE WHEN {c} IS NULL THEN 1.0 ELSE 0.0 END) AS m_{c}"
                      for c in criteo_data.CAT_NAMES)
    row = spark.sql(f"SELECT {exprs} FROM criteo").first()
    return [(c, int(row[f"d_{c}"]), float(row[f"m_{c}"])) for c in criteo_data.CAT_NAMES]


def histogram(spark: Any, column: str) -> list[tuple[str, int, float]]:
    """(bucket, rows, CTR) of ``column`` in log2 buckets: missing, <= 0, [1, 2), [2, 4), [4, 8), ..."""
    rows = spark.sql(f"""
        SELECT CASE WHEN {column} IS NULL THEN -2 WHEN {column} <= 0 THEN -1
                    ELSE CAST(floor(log2({column})) AS INT) END AS b,
               count(*) AS n, avg(label) AS ctr
        FROM criteo GROUP BY 1 ORDER BY 1""").collect()

    def name(b: int) -> str:
        return "missing" if b == -2 else "<= 0" if b == -1 else f"[{2 ** b}, {2 ** (b + 1)})"

    return [(name(r["b"]), int(r["n"]), float(r["ctr"])) for r in rows]


def top_pairs(spark: Any, columns: list[str], top: int) -> list[tuple[str, str, str, str, int, float]]:
    """The ``top`` most frequent (column a = value, column b = value) pairs among ``columns``, with CTR."""
    structs = ", ".join(f"named_struct('ca', '{a}', 'va', {a}, 'cb', '{b}', 'vb', {b})"
                        for a, b in combinations(columns, 2))
    rows = spark.sql(f"""
        SELECT p.ca, p.va, p.cb, p.vb, count(*) AS n, avg(label) AS ctr
        FROM (SELECT label, explode(array({structs})) AS p FROM criteo)
        WHERE p.va IS NOT NULL AND p.vb IS NOT NULL
        GROUP BY p.ca, p.va, p.cb, p.vb
        ORDER BY n DESC, p.ca, p.cb, p.va, p.vb LIMIT {int(top)}""").collect()
    return [(r["ca"], r["va"], r["cb"], r["vb"], int(r["n"]), float(r["ctr"])) for r in rows]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from tfos.io.paths import absolute_path, default_fs

    columns = [c.strip() for c in args.pair_columns.split(",") if c.strip()]
    unknown = [c for c in columns if c not in criteo_data.CAT_NAMES]
    if unknown or len(columns) < 2:
        raise SystemExit(f"--pair_columns needs at least two of C1..C26; not categorical: {unknown}")
    spark = SparkSession.builder.config(conf=criteo_data.spark_conf("criteo_eda", 2)).getOrCreate()
    fs = default_fs(spark.sparkContext)
    paths = [absolute_path(p, fs, os.getcwd()) for p in args.data.split(",") if p]
    criteo_data.read_dataframe(spark, paths).createOrReplaceTempView("criteo")

    n, ctr = overview(spark)
    print(f"rows: {n}")
    print(f"CTR: {ctr:.4f}")
    print("\ncategorical columns: distinct values, missing share")
    for c, distinct, missing in categorical_stats(spark):
        print(f"  {c:>4} {distinct:>8} {missing:8.1%}")
    print(f"\nhistogram of {args.hist_column} (log2 buckets): rows, CTR")
    for bucket, count, bucket_ctr in histogram(spark, args.hist_column):
        print(f"  {bucket:>18} {count:>8} {bucket_ctr:8.4f}")
    print(f"\ntop {args.top} co-occurring categorical pairs: rows, CTR")
    for ca, va, cb, vb, count, pair_ctr in top_pairs(spark, columns, args.top):
        print(f"  {ca}={va} & {cb}={vb}  {count:>8} {pair_ctr:8.4f}")
    spark.stop()


if __name__ == "__main__":
    main()
