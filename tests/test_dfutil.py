"""DataFrame <-> TFRecord (tfos.dfutil and tfos.io.dataframe_tfrecord) on a local[2] Spark,
through a local directory and through the real HDFS."""

from __future__ import annotations

import os
import uuid

import pytest
from pyspark.sql import Row
from pyspark.sql import types as T

from tfos import dfutil
from tfos.io.dataframe_tfrecord import infer_schema, read_tfrecords_df, write_tfrecords_df
from tfos.io.example_codec import decode_example, encode_example, float_feature
from tfos.io.filesystem import FileSystem
from tfos.io.paths import default_fs
from tfos.io.tfrecord import read_tfrecords, write_tfrecords

SCHEMA = T.StructType([
    T.StructField("i", T.IntegerType()),
    T.StructField("l", T.LongType()),
    T.StructField("f", T.FloatType()),
    T.StructField("d", T.DoubleType()),
    T.StructField("flag", T.BooleanType()),
    T.StructField("s", T.StringType()),
    T.StructField("bin", T.BinaryType()),
    T.StructField("ai", T.ArrayType(T.IntegerType())),
    T.StructField("af", T.ArrayType(T.FloatType())),
    T.StructField("astr", T.ArrayType(T.StringType())),
])
# float values exactly representable in float32 (FloatList stores float32)
ROWS = [
    (1, 2**40, 0.5, 1.25, True, "héllo", bytearray(b"\x00\x01\xff"), [1, 2, 3], [0.5, 1.5], ["a", "b"]),
    (-7, -(2**62), -2.0, 1e10 + 1024, False, "", bytearray(b""), [], [3.0, 4.0, 5.0], ["x"]),
    (0, 0, 0.0, 0.0, True, None, bytearray(b"zz"), [9], [], []),
]


@pytest.fixture(scope="module")
def spark():
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    existing = SparkContext._active_spark_context
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo, old_path) if p)  # for the Python workers
    session = (SparkSession.builder.master("local[2]").appName("tfos-dfutil-tests")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
               .config("spark.driver.memory", "1g").getOrCreate())
    yield session
    if existing is None:
        session.stop()
    if old_path is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old_path


def _df(spark):
    return spark.createDataFrame(ROWS, SCHEMA).repartition(2)


def _sorted(rows):
    return sorted((tuple(r) for r in rows), key=lambda r: r[0])


def _expected_inferred():
    """ROWS as they come back with an inferred schema (ints -> bigint, floats -> double)."""
    return _sorted(ROWS)


def test_default_fs_is_local(spark):
    assert default_fs(spark.sparkContext) == "file://"


def test_roundtrip_local_dir_explicit_and_inferred_schema(spark, tmp_path):
    out = str(tmp_path / "tfr")
    files = write_tfrecords_df(_df(spark), out)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-r-00000", "part-r-00001"]
    assert [f.rsplit("/", 1)[1] for f in files] == ["part-r-00000", "part-r-00001"]
    assert sum(1 for f in files for _ in read_tfrecords(f)) == 3

    explicit = read_tfrecords_df(spark, out, schema=SCHEMA)
    assert explicit.schema == SCHEMA
    assert _sorted(explicit.collect()) == _sorted(ROWS)

    inferred = read_tfrecords_df(spark, out, binary_features=["bin"])
    types = {f.name: f.dataType.simpleString() for f in inferred.schema.fields}
    assert types == {"i": "bigint", "l": "bigint", "f": "double", "d": "double", "flag": "bigint",
                     "s": "string", "bin": "binary", "ai": "array<bigint>", "af": "array<double>",
                     "astr": "array<string>"}
    got = {r["i"]: r.asDict() for r in inferred.collect()}
    assert got[1]["flag"] == 1 and got[1]["bin"] == bytearray(b"\x00\x01\xff") and got[1]["ai"] == [1, 2, 3]
    assert got[-7]["af"] == [3.0, 4.0, 5.0] and got[-7]["astr"] == ["x"] and got[-7]["ai"] == []
    assert got[0]["s"] is None and got[0]["af"] == []
    # DDL schema
    ddl = read_tfrecords_df(spark, out, schema="i int, s string, af array<float>")
    assert sorted(ddl.collect()) == sorted([Row(i=r[0], s=r[5], af=r[8]) for r in ROWS])


def test_tensorflow_parses_what_spark_wrote(spark, tmp_path):
    tf = pytest.importorskip("tensorflow")
    out = str(tmp_path / "tfr")
    write_tfrecords_df(_df(spark), out, compression="GZIP")
    files = sorted(str(p) for p in (tmp_path / "tfr").glob("part-*"))
    assert all(f.endswith(".gz") for f in files)
    spec = {"i": tf.io.FixedLenFeature([], tf.int64), "s": tf.io.VarLenFeature(tf.string),
            "af": tf.io.VarLenFeature(tf.float32), "bin": tf.io.FixedLenFeature([], tf.string)}
    parsed = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    by_i = {int(p["i"]): p for p in parsed}
    assert by_i[1]["s"].values.numpy().tolist() == ["héllo".encode()]
    assert by_i[-7]["af"].values.numpy().tolist() == [3.0, 4.0, 5.0]
    assert by_i[1]["bin"].numpy() == b"\x00\x01\xff"
    assert by_i[0]["s"].values.numpy().tolist() == []  # null string: feature absent


def test_schema_inferred_from_a_sample_not_the_first_record(spark, tmp_path):
    d = tmp_path / "sample"
    # record 1: scalar v, int x; later records: v has 3 values, x is a float, y appears
    write_tfrecords(str(d / "a.tfrecord"), [encode_example({"v": [1], "x": 1, "name": "a"})])
    write_tfrecords(str(d / "b.tfrecord"), [encode_example({"v": [1, 2, 3], "x": float_feature(2.5), "y": b"q",
                                                            "name": "b"}) for _ in range(3)])
    write_tfrecords(str(d / ".hidden.tmp"), [b"garbage is skipped"])
    (d / "_SUCCESS").write_bytes(b"")
    df = read_tfrecords_df(spark, str(d))
    assert {f.name: f.dataType.simpleString() for f in df.schema.fields} == {
        "name": "string", "v": "array<bigint>", "x": "double", "y": "string"}
    rows = sorted(df.collect())
    assert rows[0] == Row(name="a", v=[1], x=1.0, y=None)
    assert rows[1] == Row(name="b", v=[1, 2, 3], x=2.5, y="q")


def test_errors_name_the_problem(spark, tmp_path):
    out = str(tmp_path / "exists")
    write_tfrecords_df(_df(spark), out)
    with pytest.raises(FileExistsError, match="already exists"):
        write_tfrecords_df(_df(spark), out)
    with pytest.raises(Exception, match="feature 'bin' is not UTF-8 text"):
        read_tfrecords_df(spark, out, schema="bin string").collect()
    write_tfrecords_df(_df(spark).limit(1), out, mode="overwrite")
    assert read_tfrecords_df(spark, out).count() == 1
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_tfrecords_df(spark, str(tmp_path / "nowhere"))
    bad = spark.createDataFrame([(1, {"a": 1})], "k int, m map<string,int>")
    with pytest.raises(TypeError, match="column 'm'.*map<string,int>"):
        write_tfrecords_df(bad, str(tmp_path / "bad"))


def test_relative_path_resolves_against_default_fs(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tfrecords_df(_df(spark), "relative/out")
    assert (tmp_path / "relative" / "out" / "_SUCCESS").exists()
    df = read_tfrecords_df(spark, "relative/out")
    assert df.count() == 3
    assert df.schema["bin"].dataType == T.BinaryType()  # not UTF-8: inferred as binary


def test_roundtrip_through_hdfs(spark, hdfs_url):
    out = f"{hdfs_url}/tmp/tfos-df-{uuid.uuid4().hex[:8]}"
    files = write_tfrecords_df(_df(spark), out)
    fs = FileSystem()
    assert fs.listdir(out) == ["_SUCCESS", "part-r-00000", "part-r-00001"]
    assert all(f.startswith(hdfs_url) for f in files)
    back = read_tfrecords_df(spark, out, schema=SCHEMA)
    assert _sorted(back.collect()) == _sorted(ROWS)
    # compat API on HDFS, gzip via a glob
    write_tfrecords_df(_df(spark), out + "-gz", compression="GZIP")
    assert read_tfrecords_df(spark, out + "-gz/part-*", schema=SCHEMA).count() == 3
    loaded = dfutil.loadTFRecords(spark.sparkContext, out, binary_features=["bin"])
    assert dfutil.isLoadedDF(loaded) and not dfutil.isLoadedDF(loaded.select("i"))
    assert sorted(r["i"] for r in loaded.collect()) == [-7, 0, 1]
    fs.delete(out, recursive=True)
    fs.delete(out + "-gz", recursive=True)


def test_compat_functions_match_tensorflowonspark(spark, tmp_path):
    tf = pytest.importorskip("tensorflow")
    df = _df(spark)
    # saveAsTFRecords / loadTFRecords
    dfutil.saveAsTFRecords(df, str(tmp_path / "compat"))
    loaded = dfutil.loadTFRecords(spark.sparkContext, str(tmp_path / "compat"), binary_features=["bin"])
    assert loaded.count() == 3 and dfutil.isLoadedDF(loaded)

    # toTFExample: (bytearray, None) pairs that tf.train.Example parses
    pairs = df.rdd.mapPartitions(dfutil.toTFExample(df.dtypes)).collect()
    assert all(isinstance(b, bytearray) and n is None for b, n in pairs)
    examples = []
    for b, _ in pairs:
        ex = tf.train.Example()
        ex.ParseFromString(bytes(b))
        examples.append(ex)
    first = next(e for e in examples if e.features.feature["i"].int64_list.value[0] == 1)
    assert list(first.features.feature["af"].float_list.value) == [0.5, 1.5]
    assert list(first.features.feature["s"].bytes_list.value) == ["héllo".encode()]

    # infer_schema accepts a tf.train.Example, as in TensorFlowOnSpark
    schema = dfutil.infer_schema(first, binary_features=["bin"])
    assert schema["ai"].dataType == T.ArrayType(T.LongType(), False)
    assert schema["bin"].dataType == T.BinaryType()
    assert schema["s"].dataType == T.StringType()

    # fromTFExample: (bytes, None) pairs -> Rows with sorted fields
    rows = dfutil.fromTFExample([(first.SerializeToString(), None)], binary_features=["bin"])
    assert rows[0].asDict()["ai"] == [1, 2, 3] and rows[0]["s"] == "héllo"
    assert rows[0]["bin"] == bytearray(b"\x00\x01\xff") and list(rows[0].asDict()) == sorted(rows[0].asDict())

    # TF-produced examples decode identically with and without TF
    tf_bytes = tf.train.Example(features=tf.train.Features(feature={
        "a": tf.train.Feature(int64_list=tf.train.Int64List(value=[5]))})).SerializeToString()
    assert decode_example(tf_bytes)["a"].values == [5]
    assert infer_schema([tf_bytes]) == T.StructType([T.StructField("a", T.LongType())])
