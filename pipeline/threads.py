"""Threads: how many cores the pipeline may use, and lowering its threads' priority.

`DatasetConfig.low_priority` makes the threads that decode, augment and featurize
`LOW_PRIORITY_NICENESS` nicer than the process, so on a machine that trains and does
nothing else they use the cycles the model leaves free instead of preempting its
threads (measured in benchmarks/README.md, "Training threads on a small CPU").
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "LOW_PRIORITY_NICENESS",
    "cpu_cores",
    "in_low_priority_thread",
    "lower_thread_priority",
]


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_worker_state = threading.local()

# How much nicer than the process the pipeline's threads become (`low_priority`).
# +5 to +19 and Linux's idle class all gave the same gain on an otherwise idle
# machine; next to busy programs each starved the pipeline (the idle class
# entirely), hence an opt-in.
LOW_PRIORITY_NICENESS = 10


def lower_thread_priority() -> bool:
    """Makes the calling thread `LOW_PRIORITY_NICENESS` nicer, once per thread (Linux).

    Returns:
        Whether the thread now runs at the lower priority (False where threads
        have no priority of their own, as on macOS, or it is refused).
    """
    if getattr(_worker_state, "lowered", None) is None:
        _worker_state.lowered = False
        if sys.platform.startswith("linux"):
            # On Linux a thread id names one thread for setpriority (it is per
            # thread there; elsewhere it would renice the whole process).
            thread = threading.get_native_id()
            try:
                niceness = os.getpriority(os.PRIO_PROCESS, thread) + LOW_PRIORITY_NICENESS
                os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness))
                _worker_state.lowered = True
            except OSError:
                pass
    return _worker_state.lowered


def _lower_priority_probe() -> np.bool_:
    return np.bool_(lower_thread_priority())


def in_low_priority_thread(tensor: Any) -> Any:
    """`tensor`, computed after the running tf.data thread has lowered its priority."""
    lowered = tf.numpy_function(_lower_priority_probe, [], tf.bool, stateful=True)
    with tf.control_dependencies([lowered]):
        return tf.nest.map_structure(tf.identity, tensor)
