"""tfos.io.example_codec against TensorFlow's tf.train.Example, byte for byte."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tfos.io.example_codec import (
    Feature,
    bytes_feature,
    decode_example,
    encode_example,
    float_feature,
    int64_feature,
)

tf = pytest.importorskip("tensorflow")


def _tf_example(features: dict[str, tuple[str | None, list]]) -> tf.train.Example:
    out = {}
    for name, (kind, values) in features.items():
        if kind == "bytes":
            out[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif kind == "float":
            out[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        elif kind == "int64":
            out[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            out[name] = tf.train.Feature()
    return tf.train.Example(features=tf.train.Features(feature=out))


def _random_features(rng: random.Random) -> dict[str, tuple[str, list]]:
    features = {}
    for i in range(rng.randint(0, 7)):
        kind = rng.choice(["bytes", "float", "int64"])
        n = rng.choice([0, 1, 2, 3, 40, 200])
        if kind == "bytes":
            values = [bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 5, 300]))) for _ in range(n)]
        elif kind == "float":
            values = [float(np.float32(rng.uniform(-1e9, 1e9))) for _ in range(n)]
        else:
            values = [rng.choice([0, 1, -1, 127, 128, 2**63 - 1, -(2**63), rng.randint(-(2**63), 2**63 - 1)])
                      for _ in range(n)]
        features[f"{rng.choice(['a', 'feat', 'ü', 'x/y'])}{i}"] = (kind, values)
    return features


def test_random_examples_byte_identical_both_ways():
    rng = random.Random(42)
    for _ in range(200):
        features = _random_features(rng)
        reference = _tf_example(features).SerializeToString(deterministic=True)
        ours = encode_example({name: Feature(kind, values) for name, (kind, values) in features.items()})
        assert ours == reference
        decoded = decode_example(reference)
        assert {k: (f.kind, f.values) for k, f in decoded.items()} == features
        parsed = tf.train.Example()
        parsed.ParseFromString(ours)
        assert parsed == _tf_example(features)


def test_type_inference_and_helpers():
    data = encode_example({
        "label": 3, "flag": True, "score": 0.5, "name": "café", "raw": b"\x00\xff",
        "ints": [1, -2, 3], "floats": np.array([0.25, 1.5], dtype=np.float64),
        "matrix": np.arange(6).reshape(2, 3), "words": ["a", "bc"], "missing": None,
        "empty_ints": int64_feature([]), "one_float": float_feature(2), "tags": bytes_feature(["x", b"y"]),
    })
    parsed = tf.train.Example()
    parsed.ParseFromString(data)
    f = parsed.features.feature
    assert list(f["label"].int64_list.value) == [3]
    assert list(f["flag"].int64_list.value) == [1]
    assert list(f["score"].float_list.value) == [0.5]
    assert list(f["name"].bytes_list.value) == ["café".encode()]
    assert list(f["raw"].bytes_list.value) == [b"\x00\xff"]
    assert list(f["ints"].int64_list.value) == [1, -2, 3]
    assert list(f["floats"].float_list.value) == [0.25, 1.5]
    assert list(f["matrix"].int64_list.value) == list(range(6))
    assert list(f["words"].bytes_list.value) == [b"a", b"bc"]
    assert "missing" not in f
    assert f["empty_ints"].WhichOneof("kind") == "int64_list" and not f["empty_ints"].int64_list.value
    assert list(f["one_float"].float_list.value) == [2.0]
    assert list(f["tags"].bytes_list.value) == [b"x", b"y"]


def test_decode_unpacked_and_unknown_fields():
    # TF's parser accepts unpacked repeated numbers; so must ours. Build one by hand:
    # Int64List{value: 5, value: -1} unpacked, FloatList{value: 1.0} unpacked, plus unknown field 9.
    int_list = b"\x08\x05" + b"\x08" + b"\xff" * 9 + b"\x01"
    float_list = b"\x0d" + np.float32(1.0).tobytes()
    feat_i = b"\x1a" + bytes([len(int_list)]) + int_list
    feat_f = b"\x12" + bytes([len(float_list)]) + float_list
    entry_i = b"\x0a\x01i" + b"\x12" + bytes([len(feat_i)]) + feat_i
    entry_f = b"\x0a\x01f" + b"\x12" + bytes([len(feat_f)]) + feat_f
    features = b"\x0a" + bytes([len(entry_i)]) + entry_i + b"\x0a" + bytes([len(entry_f)]) + entry_f
    data = b"\x0a" + bytes([len(features)]) + features + b"\x48\x07"  # unknown varint field 9
    parsed = tf.train.Example()
    parsed.ParseFromString(data)
    assert list(parsed.features.feature["i"].int64_list.value) == [5, -1]
    decoded = decode_example(data)
    assert decoded["i"] == Feature("int64", [5, -1])
    assert decoded["f"] == Feature("float", [1.0])


def test_large_numeric_features_roundtrip():
    ints = np.random.default_rng(0).integers(-(2**63), 2**63 - 1, size=10000, dtype=np.int64)
    floats = np.random.default_rng(1).standard_normal(10000).astype(np.float32)
    data = encode_example({"i": ints, "f": floats})
    assert data == _tf_example({"i": ("int64", ints.tolist()), "f": ("float", floats.tolist())}) \
        .SerializeToString(deterministic=True)
    decoded = decode_example(data)
    assert decoded["i"].values == ints.tolist()
    assert decoded["f"].values == floats.tolist()


def test_malformed_input_raises_value_error():
    good = encode_example({"a": [1, 2, 3]})
    with pytest.raises(ValueError, match="malformed tf.train.Example"):
        decode_example(good[:-2])
    with pytest.raises(ValueError, match="malformed tf.train.Example"):
        decode_example(b"\x0a\xff\xff")


def test_empty_list_needs_a_type():
    with pytest.raises(ValueError, match="empty list"):
        encode_example({"x": []})
    with pytest.raises(TypeError, match="cannot encode"):
        encode_example({"x": object()})
