"""memnet/cube/safetensors_header.py: the strict parse that runs before any tensor library sees
bytes from a peer."""

from __future__ import annotations

import io
import json
import pickle
import struct

import numpy as np
import pytest
from safetensors.numpy import load, save

from memnet.cube import limits
from memnet.cube.safetensors_header import DTYPE_SIZES, parse_header, with_metadata
from memnet.errors import FormatError, LimitError, TensorError

TENSORS = {
    "a": np.arange(6, dtype=np.float32).reshape(2, 3),
    "b": np.arange(4, dtype=np.int8),
    "c": np.ones((2, 2), dtype=np.float16),
}


def raw_file(header: dict | str | bytes, data: bytes = b"") -> bytes:
    """A safetensors-shaped file from a header given as a dict, JSON text or raw bytes."""
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode()
    return struct.pack("<Q", len(header)) + header + data


def entry(dtype: str, shape: list, start: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


def rejected(payload: bytes, phrase: str | None = None, error: type = TensorError, **kw) -> Exception:
    with pytest.raises(error) as info:
        parse_header(payload, **kw)
    if phrase is not None:
        assert phrase in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    return info.value


def test_valid_file_from_safetensors():
    payload = save(TENSORS, metadata={"format": "pt"})
    header = parse_header(payload)
    assert set(header.tensors) == set(TENSORS)
    assert header.metadata == {"format": "pt"}
    for name, array in TENSORS.items():
        info = header.tensors[name]
        assert info.shape == array.shape
        assert info.end - info.start == array.nbytes
        got = np.frombuffer(payload[header.data_start + info.start:header.data_start + info.end],
                            dtype=array.dtype).reshape(array.shape)
        np.testing.assert_array_equal(got, array)
    assert {t.dtype for t in header.tensors.values()} == {"F32", "I8", "F16"}
    assert parse_header(memoryview(payload)) == header


def test_empty_and_zero_size_tensors():
    assert parse_header(save({})).tensors == {}
    header = parse_header(save({"z": np.zeros((0, 3), dtype=np.float32), "a": np.ones(2, np.float32)}))
    assert header.tensors["z"].shape == (0, 3)


def test_header_lengths_that_look_like_magic_are_still_safetensors():
    # a header of 0x80 (mod 256) bytes starts the file with 0x80, the pickle magic; one whose length
    # ends in 0x4b50 starts with "PK". Both are ordinary safetensors files and must parse.
    for target_low in (0x80, 0x4B50):
        mask = 0xFF if target_low < 0x100 else 0xFFFF
        for n in range(0, 40000, 1):
            payload = save({"a": np.zeros(2, np.float32)}, metadata={"pad": "x" * n})
            (length,) = struct.unpack("<Q", payload[:8])
            if length & mask == target_low:
                break
        else:
            pytest.fail("no header length found")
        assert payload[:1] == b"\x80" or payload[:2] == b"PK"
        assert load(payload)["a"].shape == (2,)
        assert set(parse_header(payload).tensors) == {"a"}


def test_duplicate_tensor_names_rejected_though_safetensors_accepts_them():
    data = np.arange(2, dtype=np.float32).tobytes()
    one = json.dumps(entry("F32", [2], 0, 8))
    payload = raw_file('{"a":' + one + ',"a":' + one + "}", data)
    # the library's JSON parser silently keeps the last entry: this is why MIP parses headers itself
    assert set(load(payload)) == {"a"}
    rejected(payload, "repeats the name 'a'")
    meta = '{"__metadata__":{"k":"1"},"__metadata__":{"k":"2"},"a":' + one + "}"
    rejected(raw_file(meta, data), "repeats the name '__metadata__'")
    nested = '{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    rejected(raw_file(nested, data), "repeats the name 'dtype'")


def test_torch_save_payload_rejected():
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.save({"a": torch.zeros(4)}, buffer)
    payload = buffer.getvalue()
    assert payload[:2] == b"PK"
    rejected(payload, "pickle")
    buffer = io.BytesIO()
    torch.save({"a": torch.zeros(4)}, buffer, _use_new_zipfile_serialization=False)
    rejected(buffer.getvalue(), "pickle")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_raw_pickle_rejected(protocol):
    rejected(pickle.dumps({"a": [1.0] * 10}, protocol=protocol), "pickle")


@pytest.mark.parametrize("protocol", [0, 1])
def test_old_pickle_protocols_rejected(protocol):
    # no magic byte to recognise, but the length/JSON checks still refuse them
    with pytest.raises(FormatError):
        parse_header(pickle.dumps({"a": 1}, protocol=protocol))


def test_zip_rejected():
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("data.pkl", b"x")
    rejected(buffer.getvalue(), "pickle or zip")


def test_truncated_at_every_cut_point():
    payload = save(TENSORS)
    for cut in range(len(payload)):
        with pytest.raises(TensorError):
            parse_header(payload[:cut])


def test_header_length_past_the_end():
    payload = save(TENSORS)
    (length,) = struct.unpack("<Q", payload[:8])
    rejected(struct.pack("<Q", length + len(payload)) + payload[8:], "runs past the end")
    rejected(struct.pack("<Q", limits.MAX_SAFETENSORS_HEADER) + b"{}", "runs past the end")


def test_header_length_over_the_limit():
    payload = struct.pack("<Q", limits.MAX_SAFETENSORS_HEADER + 1) + b"{}"
    rejected(payload, "exceeds", error=LimitError)
    rejected(struct.pack("<Q", 2**64 - 1) + b"{}", "exceeds", error=LimitError)


@pytest.mark.parametrize("header, phrase", [
    (b"not json", "not valid UTF-8 JSON"),
    (b'{"a": ', "not valid UTF-8 JSON"),
    (b"\xff\xfe{}", "not valid UTF-8 JSON"),
    (b"[]", "not a JSON object"),
    (b'"a"', "not a JSON object"),
    (b"1", "not a JSON object"),
    (b"[" * 100_000, None),
])
def test_non_json_or_non_object_header(header, phrase):
    rejected(raw_file(header), phrase)


@pytest.mark.parametrize("dtype", ["F64", "U8", "BOOL", "F8_E4M3", "f32", "", 4, None])
def test_dtype_not_in_allowlist(dtype):
    rejected(raw_file({"a": entry(dtype, [1], 0, 1)}, b"\x00"), "is not allowed")


def test_restricted_allowlist():
    payload = save({"a": np.zeros(2, np.int8)})
    assert parse_header(payload).tensors["a"].dtype == "I8"
    rejected(payload, "dtype 'I8' is not allowed", allowed_dtypes=("F32", "F16", "BF16"))


def test_every_allowed_dtype():
    data = b""
    header = {}
    for name, size in DTYPE_SIZES.items():
        header[name] = entry(name, [2], len(data), len(data) + 2 * size)
        data += bytes(2 * size)
    assert {t.dtype for t in parse_header(raw_file(header, data)).tensors.values()} == set(DTYPE_SIZES)


@pytest.mark.parametrize("tensor, data_len, phrase", [
    (entry("F32", [2], 0, 4), 4, "offsets do not match"),
    (entry("F32", [2, 2], 0, 8), 8, "offsets do not match"),
    (entry("F16", [2], 0, 8), 8, "offsets do not match"),
    (entry("F32", [2], 8, 0), 8, "offsets do not match"),
    (entry("F32", [-2], 0, 8), 8, "malformed shape"),
    (entry("F32", [2.0], 0, 8), 8, "malformed shape"),
    (entry("F32", [True], 0, 4), 4, "malformed shape"),
    (entry("F32", "2", 0, 8), 8, "malformed shape"),
    (entry("F32", [2**40], 0, 8), 8, "malformed shape"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0]}, 8, "malformed data_offsets"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 8]}, 8, "malformed data_offsets"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}, 8, "malformed data_offsets"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 8.0]}, 8, "malformed data_offsets"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [False, 8]}, 8, "malformed data_offsets"),
    ({"dtype": "F32", "shape": [2]}, 8, "exactly dtype, shape, data_offsets"),
    ({**entry("F32", [2], 0, 8), "extra": 1}, 8, "exactly dtype, shape, data_offsets"),
    ([1, 2], 8, "exactly dtype, shape, data_offsets"),
])
def test_bad_tensor_entries(tensor, data_len, phrase):
    rejected(raw_file({"a": tensor}, bytes(data_len)), phrase)


def test_overlapping_offsets():
    header = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}
    rejected(raw_file(header, bytes(12)), "overlaps or leaves a gap")
    same = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 0, 8)}
    rejected(raw_file(same, bytes(8)), "overlaps or leaves a gap")


def test_gapped_offsets():
    rejected(raw_file({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 12, 20)}, bytes(20)),
             "overlaps or leaves a gap")
    rejected(raw_file({"a": entry("F32", [2], 4, 12)}, bytes(12)), "overlaps or leaves a gap")


def test_out_of_order_offsets_are_fine():
    # tensors may be listed in any order as long as their data is packed
    header = {"b": entry("F32", [2], 8, 16), "a": entry("F32", [2], 0, 8)}
    parsed = parse_header(raw_file(header, bytes(16)))
    assert parsed.tensors["b"].start == 8


def test_trailing_bytes_after_data():
    payload = save(TENSORS)
    rejected(payload + b"\x00", "header describes")
    rejected(raw_file({"a": entry("F32", [2], 0, 8)}, bytes(7)), "header describes")


@pytest.mark.parametrize("metadata", [
    {"k": 1}, {"k": None}, {"k": ["v"]}, {"k": {"x": "y"}}, ["k", "v"], "k=v", 1,
])
def test_bad_metadata_types(metadata):
    rejected(raw_file({"__metadata__": metadata}), "__metadata__ must map strings to strings")


def test_too_many_tensors():
    header = {f"t{i}": entry("I8", [0], 0, 0) for i in range(limits.MAX_TENSORS + 1)}
    rejected(raw_file(header), "tensors, the limit", error=LimitError)
    del header["t0"]
    assert len(parse_header(raw_file(header)).tensors) == limits.MAX_TENSORS


def test_with_metadata_keeps_tensors_loadable_and_identical():
    original = save(TENSORS, metadata={"format": "pt"})
    rewritten = with_metadata(original, {"memnet.peft_config": '{"r":4}', "format": "np"})
    header = parse_header(rewritten)
    assert header.metadata == {"format": "np", "memnet.peft_config": '{"r":4}'}
    assert header.data_start % 8 == 0
    loaded = load(rewritten)
    assert set(loaded) == set(TENSORS)
    for name, array in TENSORS.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].dtype == array.dtype
    # tensor data is carried over byte for byte
    old = parse_header(original)
    assert rewritten[header.data_start:] == original[old.data_start:]
    # idempotent, and a file without metadata gains it
    assert with_metadata(rewritten, {"format": "np"}) == rewritten
    assert parse_header(with_metadata(save(TENSORS), {"x": "y"})).metadata == {"x": "y"}


def test_with_metadata_refuses_bad_input():
    with pytest.raises(TensorError, match="pickle"):
        with_metadata(pickle.dumps({"a": 1}), {"x": "y"})
    with pytest.raises(TensorError):
        with_metadata(save(TENSORS)[:-1], {"x": "y"})
