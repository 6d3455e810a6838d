"""TensorFlowOnSpark 2.2.5's API under tfos: the inventory, util.single_node_env, and the stop request's key."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import socket

import pytest

API = os.path.join(os.path.dirname(__file__), "resources", "tensorflowonspark_2_2_5_api.txt")
_LINE = re.compile(r"^(?P<name>[\w.]+)(?:\((?P<params>.*)\))?$")


def _inventory() -> tuple[list[tuple[str, str | None]], list[str]]:
    entries, absent = [], []
    with open(API) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("!"):
                absent.append(line[1:].split(" -- ")[0].strip())
                continue
            match = _LINE.match(line)
            assert match, f"unparsable inventory line: {line}"
            entries.append((match["name"], match["params"]))
    return entries, absent


def _resolve(dotted: str):
    """The tfos object for a TFoS name ``module.attr[.attr]`` (``tfos.<module>``); None if missing."""
    module_name, *attrs = dotted.split(".")
    obj = importlib.import_module(f"tfos.{module_name}")
    for attr in attrs:
        if not hasattr(obj, attr):
            if inspect.isclass(obj) and _assigned_in_init(obj, attr):
                return _PRESENT
            return None
        obj = getattr(obj, attr)
    return _PRESENT if obj is None else obj


_PRESENT = object()  # an attribute that exists (an instance attribute, or None)


def _assigned_in_init(cls: type, attr: str) -> bool:
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and hasattr(init, "__code__") and \
                re.search(rf"self\.{attr}\s*[:=]", inspect.getsource(init)):
            return True
    return False


def _params(text: str) -> list[tuple[str, object]]:
    """``[(name, default or inspect._empty)]`` of a parameter list written as in a def."""
    tree = ast.parse(f"def f({text}): pass").body[0].args
    defaults = [inspect.Parameter.empty] * (len(tree.args) - len(tree.defaults)) + \
        [ast.literal_eval(d) for d in tree.defaults]
    return [(a.arg, d) for a, d in zip(tree.args, defaults, strict=True)]


ENTRIES, ABSENT = _inventory()


@pytest.mark.parametrize(("name", "params"), ENTRIES, ids=[e[0] for e in ENTRIES])
def test_tensorflowonspark_name_exists_with_its_signature(name, params):
    obj = _resolve(name)
    assert obj is not None, f"tfos.{name} is missing"
    if params is None:
        return
    assert callable(obj), f"tfos.{name} is not callable"
    signature = inspect.signature(obj)
    ours = [p for p in signature.parameters.values() if p.name != "self"
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    theirs = _params(params)
    assert [p.name for p in ours[:len(theirs)]] == [n for n, _ in theirs], f"tfos.{name}{signature}"
    for p in ours[len(theirs):]:
        assert p.default is not p.empty, f"tfos.{name}: extra parameter {p.name} needs a default"
    for p, (_, default) in zip(ours, theirs, strict=False):
        if default is not inspect.Parameter.empty:  # a tuple stands for a list default (nothing mutable)
            ours_default = list(p.default) if isinstance(p.default, tuple) else p.default
            assert ours_default == default, f"tfos.{name}: {p.name} defaults to {p.default!r}, TFoS to {default!r}"


def test_names_left_out_are_listed_with_a_reason():
    assert ABSENT and all(_resolve(name) is None for name in ABSENT if not name.startswith("TFCluster.tf_status"))


def test_import_forms_of_tensorflowonspark_scripts():
    import tfos.util
    from tfos import TFCluster, TFNode, compat, dfutil, reservation  # noqa: F401
    from tfos.pipeline import TFEstimator, TFModel  # noqa: F401
    from tfos.TFCluster import InputMode

    assert InputMode.SPARK == 1 and InputMode.TENSORFLOW == 0
    assert callable(tfos.util.single_node_env) and callable(reservation.Client)
    assert inspect.isclass(TFNode.DataFeed)


@pytest.fixture
def restored_environ():
    """single_node_env sets os.environ as TensorFlowOnSpark does: put it back whole afterwards, or the
    fake Hadoop CLASSPATH and CUDA_VISIBLE_DEVICES='' leak into every later test of the session."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_single_node_env_sets_gpus_and_the_hadoop_classpath(tmp_path, monkeypatch, restored_environ):
    from tfos import util
    from tfos.cluster.gpus import query_gpus

    home = tmp_path / "hadoop"
    (home / "share" / "hadoop" / "common").mkdir(parents=True)
    (home / "share" / "hadoop" / "common" / "hadoop-common.jar").write_bytes(b"")
    for var in ("CLASSPATH", "TFOS_CLASSPATH_UPDATED", "HADOOP_HOME", "HADOOP_COMMON_HOME", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HADOOP_PREFIX", str(home))
    util.single_node_env()
    assert "hadoop-common.jar" in os.environ["CLASSPATH"]
    assert os.environ["TFOS_CLASSPATH_UPDATED"] == "1"
    if query_gpus():
        assert os.environ["CUDA_VISIBLE_DEVICES"] != ""
    else:
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # CPU, as TensorFlowOnSpark sets it
    util.single_node_env(num_gpus=0)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_util_helpers(tmp_path, monkeypatch):
    from tfos import util

    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="executor_id"):
        util.read_executor_id()
    util.write_executor_id(7)
    assert util.read_executor_id() == 7
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_text("")
    assert util.find_in_path(os.pathsep.join(["/nonexistent", str(tmp_path / "bin")]), "tool") == \
        str(tmp_path / "bin" / "tool")
    assert util.find_in_path(str(tmp_path), "tool") is False
    socket.inet_aton(util.get_ip_address())


def test_stop_request_needs_the_stop_key_and_the_server_rejects_anything_else():
    from tfos import reservation
    from tfos.reservation import protocol
    from tfos.reservation.client import ReservationClient, ReservationError

    server = reservation.Server(1)
    host, port, token = server.start()
    try:
        with pytest.raises(PermissionError, match="stop token"):
            reservation.Client((host, port)).request_stop()
        with pytest.raises(ReservationError):
            reservation.Client((host, port, "00" * 32)).request_stop()  # a wrong key
        with pytest.raises(ReservationError):  # the stop key signs nothing but a stop request
            ReservationClient((host, port), bytes.fromhex(token)).request(protocol.QUERY)
        with pytest.raises(PermissionError):
            reservation.Client(f"{host}:{port}:{token}").register({})
        assert not server.done and server.rejected >= 2  # the client retries once
        assert reservation.Client(f"{host}:{port}:{token}").request_stop() == "OK"
        assert server.done and server.stop_requested_by_client
        assert ReservationClient((host, port), server.secret).query()["registered"] == 0  # still serving
    finally:
        server.stop()
