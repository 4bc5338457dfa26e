from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import dhurandhar as d
from dhurandhar import _native

from conftest import as_json, cli_json

D = 64

CODECS = [
    d.TurboQuantCodec(D),
    d.RotorQuantCodec(D, d.RotorQuantConfig(residual_bits=3)),
    d.OScaRCodec(D, d.OScaRConfig(bits=4)),
    d.TurboMseCodec(D, 3),
    d.TurboProdCodec(D, 4),
    d.Q8_0Codec(D),
    d.Q4_0Codec(D),
    d.Q4_0RotCodec(D),
    d.Kivi2Codec(D, 2),
]


def kv(n=64, dim=D, seed=0):
    return d.synthetic_kv(n, dim, "outlier-channels", seed=seed)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@pytest.mark.parametrize("role", ["key", "value"])
def test_round_trip_keeps_shape_and_quality(codec, role):
    x = kv().reshape(2, 32, D)
    e = codec.encode(x, role)
    assert e.shape == (2, 32, D) and e.role == role and e.codec == codec.name
    assert len(e) == e.nbytes == len(e.data) == len(bytes(e)) == codec.encoded_len(64, role)
    y = codec.decode(e)
    assert y.dtype == np.float32 and y.shape == x.shape and y.flags.c_contiguous
    r = codec.reconstruction_error(x, role)
    assert 0.85 < r["cos_sim"] <= 1.0  # kivi2 values at 2 bits: 0.87
    np.testing.assert_allclose(r["mse"], np.mean((x.astype(np.float64) - y) ** 2), rtol=1e-6)
    assert r["bits_per_value"] == pytest.approx(e.bits_per_value)
    assert r["compression_ratio"] == r["compression_vs_bf16"] == pytest.approx(16 / r["bits_per_value"])
    np.testing.assert_array_equal(codec.decode_bytes(e.data, e.shape, role), y)


def test_every_codec_has_a_class():
    assert sorted(i["name"] for i in d.codec_info()) == sorted(
        [c.name for c in CODECS] + ["spectral"]
    )
    assert isinstance(d.make_codec("turboquant", D), d.TurboQuantCodec)
    assert d.make_codec("q4", D).name == "q4_0"
    with pytest.raises(ValueError, match="unknown codec"):
        d.make_codec("nope", D)


def test_dtypes_and_layouts_give_the_same_bytes():
    c = d.TurboQuantCodec(D)
    x = kv(32).astype(np.float16).astype(np.float32)  # exactly representable in f16
    ref = c.encode(x).data
    assert c.encode(x.astype(np.float16)).data == ref
    f = np.asfortranarray(x)
    assert not f.flags.c_contiguous and c.encode(f).data == ref
    big = np.zeros((32, 2 * D), np.float32)
    big[:, ::2] = x
    view = big[:, ::2]
    assert not view.flags.c_contiguous and c.encode(view).data == ref
    rev = x[::-1]
    assert c.encode(rev).data == c.encode(np.ascontiguousarray(rev)).data
    assert c.encode(x[0]).shape == (D,)  # a single vector
    assert c.encode(x.reshape(2, 2, 8, D)).data == ref  # any leading shape


def test_zero_copy_reads():
    x = kv(8)
    assert _native.reads_in_place(x)
    assert not _native.reads_in_place(np.asfortranarray(x.reshape(8, 8, 8)))
    assert not _native.reads_in_place(x.astype(np.float16))
    before = x.copy()
    d.TurboQuantCodec(D).encode(x)
    np.testing.assert_array_equal(x, before)  # read, never written


def test_read_only_input_is_fine():
    x = kv(8)
    x.setflags(write=False)
    assert len(d.Q8_0Codec(D).encode(x)) > 0


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (np.zeros((4, D), np.float64), TypeError, "float64"),
        (np.zeros((4, D), np.int32), TypeError, "int32"),
        ([[0.0] * D], TypeError, "list"),
        (np.zeros((4, D + 1), np.float32), ValueError, "head_dim = 64"),
        (np.float32(1.0), TypeError, "numpy array"),
        (np.zeros((), np.float32), ValueError, "0-d"),
        (np.zeros((0, D), np.float32), ValueError, "no vectors"),
    ],
)
def test_bad_input_raises_clearly(bad, exc, match):
    with pytest.raises(exc, match=match):
        d.TurboQuantCodec(D).encode(bad)


def test_bad_values_and_arguments():
    c = d.TurboQuantCodec(D)
    x = kv(4)
    x[1, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        c.encode(x)
    with pytest.raises(ValueError, match="token group"):
        d.OScaRCodec(D).encode(kv(10), "key")  # keys go in groups of 32
    with pytest.raises(ValueError, match="role"):
        c.encode(kv(4), "query")
    with pytest.raises(ValueError, match="does not support"):
        d.TurboQuantCodec(D, d.TurboQuantConfig(residual_bits=1))
    with pytest.raises(ValueError, match="head_dim"):
        d.TurboQuantCodec(0)
    with pytest.raises(TypeError):
        d.TurboQuantCodec(64.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TurboQuantConfig"):
        d.TurboQuantCodec(D, d.OScaRConfig())
    e = c.encode(kv(4))
    with pytest.raises(ValueError, match="encoded by turbo"):
        d.TurboQuantCodec(D, d.TurboQuantConfig(residual_bits=3)).decode(e)
    with pytest.raises(TypeError):
        c.decode(e.data)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        c.decode_bytes(e.data[:-1], e.shape)


def test_spectral_needs_calibration():
    sq = d.SpectralQuantCodec(D, d.SpectralQuantConfig(avg_bits=3))
    assert not sq.calibrated
    with pytest.raises(ValueError, match="calibrate"):
        sq.encode(kv())
    x = d.synthetic_kv(512, D, "low-rank")
    assert sq.calibrate(x) is sq and sq.calibrated
    r = sq.reconstruction_error(x)
    assert 1 <= r["d_eff"] <= D and r["cos_sim"] > 0.95
    assert sq.side_bytes() > 0
    assert sq.decode(sq.encode(x)).shape == x.shape
    with pytest.raises(ValueError, match="calibration"):
        d.SpectralQuantCodec(D).calibrate(x[:1])


def test_compare_is_the_cli_document():
    args = dict(codecs=["turbo", "q4_0", "spectral"], bits=[2, 4], head_dim=64, kv_heads=2,
                seq_len=128, queries=8, timing=False, seed=3)
    r = d.compare_codecs(**args)
    cli = cli_json("kv", "compare", "--codecs", "turbo,q4_0,spectral", "--bits", "2,4", "--head-dim", "64",
                   "--num-kv-heads", "2", "--seq-len", "128", "--queries", "8", "--no-timing", "--seed", "3")
    assert as_json(r.to_dict()) == cli
    assert {row.codec for row in r.rows} == {"turbo", "q4_0", "spectral"}


def test_compare_progress_callback_and_interrupt():
    seen = []
    d.compare_codecs(codecs=["q8_0", "q4_0"], bits=[4, 8], head_dim=32, kv_heads=1, seq_len=64, queries=4,
                     timing=False, progress=lambda done, total, label: seen.append((done, total)))
    assert seen[-1] == (2, 2)

    def stop(done, total, label):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        d.compare_codecs(codecs=["q8_0", "q4_0"], bits=[8], head_dim=32, kv_heads=1, seq_len=64,
                         queries=4, timing=False, progress=stop)


def test_bench_is_the_cli_document():
    r = d.kv_bench("qwen2.5-0.5b", seq_len=4096, codec="turbo", bits=3, samples=64, queries=8)
    cli = cli_json("kv", "bench", "-m", "qwen2.5-0.5b", "--seq-len", "4096", "--codec", "turbo", "--bits", "3",
                   "--samples", "64", "--queries", "8")
    assert as_json(r.to_dict()) == cli


def test_speed_report_shape():
    r = d.kv_speed([64], ["q8_0"], 8, threads=[1], vectors=256, min_seconds=0.01)
    assert (r.codec, r.head_dim, r.threads, r.vectors) == ("q8_0", 64, 1, 256)
    assert r.encode_ns_per_vector > 0 and r.decode_ns_per_vector > 0
    assert r.bytes_per_vector == 64 * 4 and r.encoded_bytes_per_vector == 68  # two q8_0 blocks


def test_threads_encode_concurrently_and_agree():
    c = d.TurboMseCodec(128, 4)
    data = [d.synthetic_kv(256, 128, seed=s) for s in range(8)]
    want = [c.encode(x).data for x in data]
    got: list = [None] * len(data)
    errors: list = []

    def work(i):
        try:
            for _ in range(20):
                e = c.encode(data[i])
                assert c.decode(e).shape == (256, 128)
            got[i] = e.data
        except BaseException as ex:  # noqa: BLE001
            errors.append(ex)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(data))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and got == want


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_no_memory_growth_over_10k_encodes():
    c = d.TurboQuantCodec(128)
    x = d.synthetic_kv(16, 128)
    for _ in range(500):  # warm up allocator pools
        c.decode(c.encode(x))
    gc.collect()
    before = _rss_kib()
    for _ in range(10_000):
        e = c.encode(x)
        c.decode(e)
        c.reconstruction_error(x)
    gc.collect()
    grown = _rss_kib() - before
    # 10k × (encode + decode + metrics) moves ~200 MB through the allocator; a leak of
    # even the 16×128 input per call would be 80 MB. Allow 8 MiB of allocator noise.
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB over 10k calls"


def _write_safetensors(path, tensors):
    """A minimal f32 safetensors file (header JSON + little-endian data)."""
    import json

    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def test_compare_on_numpy_kv_is_the_cli_document_on_the_same_file(tmp_path):
    k = d.synthetic_kv(96 * 2, 64, "outlier-channels", seed=5).reshape(96, 2, 64)
    v = d.synthetic_kv(96 * 2, 64, "gaussian", seed=6).reshape(96, 2, 64)
    args = dict(codecs=["turbo", "q4_0", "spectral"], bits=[2, 4], queries=8, timing=False, seed=3)
    r = d.compare_codecs(keys=k, values=v, **args).to_dict()
    path = tmp_path / "kv.safetensors"
    _write_safetensors(path, {"layers.0.k": k, "layers.0.v": v})
    cli = cli_json("kv", "compare", "--data", str(path), "--codecs", "turbo,q4_0,spectral", "--bits", "2,4",
                   "--queries", "8", "--no-timing", "--seed", "3")
    assert (r["config"].pop("data"), cli["config"].pop("data")) == ("in-memory arrays", str(path))
    assert as_json(r) == cli
    assert (cli["config"]["kv_heads"], cli["config"]["head_dim"], cli["config"]["seq_len"]) == (2, 64, 96)
    # float16 and Fortran order are read as the same values (one copy each).
    k16, v16 = k.astype(np.float16), v.astype(np.float16)
    a = d.compare_codecs(keys=k16, values=v16, **args).to_dict()
    b = d.compare_codecs(keys=np.asfortranarray(k16.astype(np.float32)),
                         values=np.asfortranarray(v16.astype(np.float32)), **args).to_dict()
    assert as_json(a) == as_json(b)
    # [tokens, head_dim] is one head.
    one = d.compare_codecs(keys=k[:, 0], values=v[:, 0], **args)
    assert (one.config["kv_heads"], one.config["seq_len"]) == (1, 96)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(keys=np.zeros((8, 16), np.float32)), ValueError, "both keys and values"),
    (dict(keys=np.zeros((8, 16), np.float32), values=np.zeros((8, 32), np.float32)), ValueError, "one shape"),
    (dict(keys=np.zeros((8, 16), np.float64), values=np.zeros((8, 16), np.float64)), TypeError, "float32 or float16"),
    (dict(keys=[[0.0] * 16], values=[[0.0] * 16]), TypeError, "numpy array"),
    (dict(data="x.npy", keys=np.zeros((8, 16), np.float32), values=np.zeros((8, 16), np.float32)),
     ValueError, "not both"),
])
def test_compare_on_numpy_kv_rejects_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        d.compare_codecs(codecs=["q8_0"], bits=[8], queries=4, timing=False, **kwargs)


def _gil_released_during(call):
    """Whether another Python thread ran while `call()` was inside Rust.

    The switch interval is made huge so the main thread never hands the GIL over while
    it runs Python code; the counter thread can then only advance while the main thread
    blocks, and between the two reads around `call()` the only blocking is inside it.
    The counter thread yields the GIL after each step (sleep) so the call can return.
    No time is measured: the call is repeated until the counter moved or 50 tries.
    """
    import sys
    import time

    counter = [0]
    running, stop = threading.Event(), threading.Event()

    def count():
        while not stop.is_set():
            counter[0] += 1
            running.set()
            time.sleep(0)

    old = sys.getswitchinterval()
    t = threading.Thread(target=count)
    try:
        t.start()
        running.wait()
        sys.setswitchinterval(1000.0)
        for _ in range(50):
            before = counter[0]
            call()
            if counter[0] != before:
                return True
        return False
    finally:
        sys.setswitchinterval(old)
        stop.set()
        t.join()


def test_gil_is_released_during_encode_and_compare():
    c = d.TurboMseCodec(128, 4)
    x = d.synthetic_kv(4096, 128, seed=1)
    assert _gil_released_during(lambda: c.encode(x))
    assert _gil_released_during(lambda: d.compare_codecs(codecs=["q8_0"], bits=[8], head_dim=64, kv_heads=1,
                                                         seq_len=256, queries=4, timing=False))


def test_kv_cache_compressor_follows_the_model_layers():
    from dhurandhar.turboquant import KVCacheCompressor, TurboQuantCodec, TurboQuantConfig

    n, cfg = 600, TurboQuantConfig(residual_bits=3)
    comp = KVCacheCompressor("gemma4-e2b", cfg)
    layers = d.kv_bench("gemma4-e2b", seq_len=n, codec="turbo", bits=3, samples=16, queries=4).footprint["layers"]
    assert comp.num_layers == len(layers)
    kinds = set()
    for spec in layers:
        h, hd = spec["kv_heads"], spec["head_dim"]
        x = d.synthetic_kv(n * h, hd, seed=spec["index"]).reshape(n, h, hd)
        c = comp.compress_layer(spec["index"], x, "key")
        if spec["kv"]["kind"] == "shared_from":
            assert c is None  # reads an earlier layer's cache: nothing of its own
            kinds.add("shared")
            continue
        # A sliding layer keeps its window (the footprint's token count), the rest all.
        assert (c.layer, c.role, c.tokens, c.dropped) == (spec["index"], "key", spec["tokens"], n - spec["tokens"])
        kinds.add(spec["attention"])
        if spec["index"] in (0, 4):  # one sliding, one global: the codec's own round trip
            y = comp.decompress_layer(c)
            kept = x[n - c.tokens:]
            codec = TurboQuantCodec(hd, cfg)
            assert y.shape == kept.shape and np.array_equal(y, codec.decode(codec.encode(kept)))
    assert kinds == {"shared", "sliding", "global"}
    with pytest.raises(ValueError, match="out of range"):
        comp.compress_layer(len(layers), np.zeros((4, 1, 256), np.float32))
    with pytest.raises(ValueError, match="not a multiple"):
        comp.compress_layer(0, np.zeros((4, 1, 100), np.float32))
