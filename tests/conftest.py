"""Shared test set-up: split the CPU into logical devices so multi-tower code runs without a GPU.

TensorFlow fixes its device list the first time it initialises, so this runs at import time, before
any test touches TensorFlow. Tests that need towers use `cpu_devices(n)`.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_LOGICAL_CPUS = 2

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(NUM_LOGICAL_CPUS)])


def cpu_devices(n):
    """Names of the first `n` logical CPU devices, e.g. ['/cpu:0', '/cpu:1']."""
    names = [d.name for d in tf.config.list_logical_devices("CPU")]
    if n > len(names):
        pytest.skip(f"needs {n} logical CPUs, have {len(names)}")
    return names[:n]
