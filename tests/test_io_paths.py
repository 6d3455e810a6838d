"""tfos.io.paths: TensorFlowOnSpark TFNode.hdfs_path rules."""

from __future__ import annotations

import getpass

import pytest

from tfos.io.paths import absolute_path, has_scheme, normalize_default_fs


@pytest.mark.parametrize("path", [
    "hdfs://nn:8020/a/b", "file:///tmp/x", "viewfs://cluster/x", "gs://bucket/x", "s3a://b/k", "hdfs:///x",
])
def test_scheme_paths_unchanged(path):
    assert absolute_path(path, "hdfs://other:9000", "/work") == path
    assert has_scheme(path)


def test_absolute_paths_get_default_fs():
    assert absolute_path("/data/x", "hdfs://nn:8020", "/work") == "hdfs://nn:8020/data/x"
    assert absolute_path("/data/x", "hdfs://nn:8020/", "/work") == "hdfs://nn:8020/data/x"
    assert absolute_path("/data/x", "file:///", "/work") == "file:///data/x"
    assert absolute_path("/data/x", "file://", "/work") == "file:///data/x"


def test_relative_hdfs_paths_resolve_to_home(monkeypatch):
    monkeypatch.delenv("HADOOP_USER_NAME", raising=False)
    user = getpass.getuser()
    assert absolute_path("mnist/model", "hdfs://nn:8020", "/work") == f"hdfs://nn:8020/user/{user}/mnist/model"
    assert absolute_path("m", "viewfs://c", "/work") == f"viewfs://c/user/{user}/m"
    assert absolute_path("m", "hdfs://nn:8020", "/work", user="alice") == "hdfs://nn:8020/user/alice/m"
    monkeypatch.setenv("HADOOP_USER_NAME", "bob")
    assert absolute_path("m", "hdfs://nn:8020", "/work") == "hdfs://nn:8020/user/bob/m"


def test_relative_local_paths_resolve_to_working_dir(tmp_path, monkeypatch):
    assert absolute_path("mnist/model", "file:///", "/home/me/job") == "file:///home/me/job/mnist/model"
    assert absolute_path("m", "file://", "/") == "file:///m"
    monkeypatch.chdir(tmp_path)
    assert absolute_path("m", "file:///", None) == f"file://{tmp_path}/m"
    assert absolute_path("m", None, str(tmp_path)) == f"file://{tmp_path}/m"


def test_normalize_default_fs():
    assert normalize_default_fs("file:///") == "file://"
    assert normalize_default_fs("file:/") == "file://"
    assert normalize_default_fs("") == "file://"
    assert normalize_default_fs("hdfs://nn:8020/") == "hdfs://nn:8020"
    assert normalize_default_fs("hdfs://nn:8020") == "hdfs://nn:8020"


def test_rejects_empty_path():
    with pytest.raises(ValueError):
        absolute_path("", "file://", "/")
