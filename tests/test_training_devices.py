"""Tests for training/devices.py: tower names, batch splitting and the automatic precision."""
import pytest

from training import devices

CPU = ["/job:localhost/replica:0/task:0/device:CPU:0"]
GPUS = [f"/job:localhost/replica:0/task:0/device:GPU:{i}" for i in range(2)]


def cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 {flags}\n\n"
                    f"processor\t: 1\nflags\t\t: fpu sse2 {flags}\n")
    return str(path)


def test_amx_is_read_from_the_cpu_flags(tmp_path):
    assert devices.cpu_has_amx_bfloat16(cpuinfo(tmp_path, "avx512f amx_tile amx_bf16 amx_int8"))
    assert not devices.cpu_has_amx_bfloat16(cpuinfo(tmp_path, "avx512f avx512_bf16"))
    assert not devices.cpu_has_amx_bfloat16(str(tmp_path / "missing"))


@pytest.mark.parametrize("asked,dtype,amx,towers,policy", [
    (None, "auto", True, CPU, "mixed_bfloat16"),     # automatic: on where measured faster
    (None, "auto", False, CPU, "float32"),
    (None, "auto", True, GPUS, "float32"),           # GPUs: only when asked
    (True, "auto", False, CPU, "mixed_bfloat16"),
    (True, "auto", False, GPUS, "mixed_float16"),
    (False, "auto", True, CPU, "float32"),
    # Naming a dtype asks for mixed precision, on any device, unless it is turned off.
    (None, "float16", False, CPU, "mixed_float16"),
    (None, "bfloat16", False, GPUS, "mixed_bfloat16"),
    (False, "float16", True, GPUS, "float32"),
])
def test_precision_policy(monkeypatch, asked, dtype, amx, towers, policy):
    monkeypatch.setattr(devices, "cpu_has_amx_bfloat16", lambda: amx)
    assert devices.precision_policy(asked, towers, dtype) == policy


def test_tower_names_and_batch_split():
    assert [devices.tower_name(d) for d in GPUS] == ["gpu_0", "gpu_1"]
    assert devices.check_batch_size(32, 2) == 16
    with pytest.raises(ValueError, match="32"):
        devices.check_batch_size(32, 3)


def test_the_start_line_names_each_gpu(monkeypatch):
    # On this machine TensorFlow reports no GPU: nothing to name, and no error.
    assert devices.gpu_details(0) == (None, None)
    details = {0: ("NVIDIA A100-SXM4-40GB", 39_495_729_152), 1: ("NVIDIA L4", None),
               2: (None, None)}
    monkeypatch.setattr(devices, "gpu_details", details.__getitem__)
    names = [devices.describe_tower(f"/job:localhost/replica:0/task:0/device:GPU:{i}")
             for i in range(3)]
    assert names == ["gpu_0 (NVIDIA A100-SXM4-40GB, 36.8 GiB)", "gpu_1 (NVIDIA L4)", "gpu_2"]
    assert devices.describe_tower("/job:localhost/replica:0/task:0/device:CPU:0") == "cpu_0"


@pytest.mark.parametrize("choice,towers,where", [
    ("auto", GPUS, "device"), ("auto", CPU, "host"), ("host", GPUS, "host"),
    ("device", CPU, "device")])
def test_where_batches_are_augmented(choice, towers, where):
    assert devices.augment_on(choice, towers) == where
