"""What the machine offers, and the precision and thread counts chosen for it.

The facts (`DeviceFacts`) are read in one impure function, `read_device_facts`; every
decision is a pure function of them, so each can be tested with faked facts:

- `choose_precision`: the mixed-precision policy `train.precision = "auto"` becomes.
- `resolve_precision`: `auto`, an explicit request or a resumed experiment's policy.
- `intra_op_threads`: how many threads TensorFlow gives one op.

Measurements behind them (which CPU, which figures) are in benchmarks/README.md,
"Precision and threads on the machine at hand".
"""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AUTO = "auto"
# The CPU flag (Linux /proc/cpuinfo) of Intel's AMX tile unit with bfloat16 matmuls.
AMX_FLAG = "amx_bf16"
# AVX-512 bfloat16 dot products (VDPBF16PS): bfloat16 instructions without a tile unit.
AVX512_BF16_FLAG = "avx512_bf16"
# /proc/cpuinfo's vendor_id of AMD CPUs. With AVX-512 BF16 (Zen 4 and later) bfloat16
# trained the demo faster than float32 there; on Intel CPUs with the same flag and no
# AMX it trained slower (benchmarks/README.md, "Precision and threads on the machine
# at hand"), so the vendor decides where the flag alone cannot.
AMD_VENDOR = "AuthenticAMD"
# GPU compute capabilities: tensor cores (float16) from Volta, bfloat16 from Ampere.
FLOAT16_TENSOR_CORES = (7, 0)
BFLOAT16_TENSOR_CORES = (8, 0)
# CPU-only machines with at most this many cores run one thread per op.
SMALL_CPU_CORES = 2
# Where a training run records the device and the choices made for it.
HARDWARE_FILE = "hardware.json"


@dataclass(frozen=True)
class DeviceFacts:
    """What a machine offers to training, as read by `read_device_facts`.

    Attributes:
        cpu_name: The CPU's model name ("" if unknown).
        cpu_flags: The CPU's feature flags (Linux: /proc/cpuinfo's `flags`, or
            `Features` on ARM); empty where they cannot be read (macOS, Windows).
        cpu_cores: Cores this process may run on.
        gpu_capabilities: One CUDA compute capability `(major, minor)` per visible
            GPU, `None` where TensorFlow does not report it.
        cpu_vendor: The CPU's vendor as /proc/cpuinfo's `vendor_id` names it
            ("GenuineIntel", "AuthenticAMD"; "" if unknown).
    """

    cpu_name: str = ""
    cpu_flags: frozenset[str] = frozenset()
    cpu_cores: int = 1
    gpu_capabilities: tuple[tuple[int, int] | None, ...] = ()
    cpu_vendor: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts (the flags reduced to the ones decisions look at)."""
        values = dataclasses.asdict(self)
        values["cpu_flags"] = sorted(self.cpu_flags & {AMX_FLAG, AVX512_BF16_FLAG})
        values["gpu_capabilities"] = [
            None if c is None else f"{c[0]}.{c[1]}" for c in self.gpu_capabilities
        ]
        return values


@dataclass(frozen=True)
class PrecisionChoice:
    """A Keras mixed-precision policy and why it was chosen."""

    policy: str
    reason: str


def choose_precision(facts: DeviceFacts, cudnn_lstm: bool = True) -> PrecisionChoice:
    """The fastest policy the device offers for training our models (`--precision auto`).

    On GPUs, by compute capability (the lowest among the visible GPUs):

    - 8.0 and newer (Ampere on) have bfloat16 tensor cores; `mixed_bfloat16` needs
      no loss scaling. But TensorFlow's cuDNN LSTM op (`CudnnRNNV3`) has no bfloat16
      kernel, so under `mixed_bfloat16` our LSTM layers would leave cuDNN for the
      generic kernel. With cuDNN LSTMs (`model.use_cudnn` not false) the choice is
      therefore `mixed_float16` there too; without, `mixed_bfloat16`.
    - 7.x (Volta, Turing) has float16 tensor cores: `mixed_float16`.
    - Below 7.0 (or unknown): `float32`; half precision has no tensor cores to run on.

    On CPUs, `mixed_bfloat16` only where it trained the demo measurably faster than
    `float32`:

    - with AMX (the `amx_bf16` flag): its tile unit runs bfloat16 matmuls several
      times faster than float32 ones;
    - on AMD CPUs with AVX-512 BF16 (the `avx512_bf16` flag: Zen 4 and later):
      mixed_bfloat16 trained the demo 1.03-1.22x faster on AMD EPYCs.

    Everywhere else `float32`: on Intel CPUs with AVX-512 BF16 but no AMX bfloat16
    made the LSTM's train step and the demo about 1.6x slower; CPUs without either
    flag (older x86, ARM, Apple) have no bfloat16 matmul instructions for oneDNN to
    use. The figures are in benchmarks/README.md, "Precision and threads on the
    machine at hand".

    Why flags and vendor rather than a start-up probe timing both precisions: they
    are read instantly and give the same answer on every start, so a resumed or
    repeated run trains as the first did and the choice is testable; a probe costs
    seconds of every start, and on a shared machine it measures the load as much as
    the CPU: a probe of the whole demo model's train step gave bfloat16/float32
    ratios from 0.94 to 1.18 on one idle AMD EPYC, on both sides of 1. The cost is a
    rule learned from the CPUs measured: a CPU unlike them gets `float32`, the safe
    choice, and `--precision` overrides it.

    Args:
        facts: The device, as `read_device_facts` returns it.
        cudnn_lstm: Whether the model's LSTMs use cuDNN on a GPU.

    Returns:
        The policy and a one-line reason naming the fact it rests on.
    """
    if facts.gpu_capabilities:
        return _gpu_precision(facts.gpu_capabilities, cudnn_lstm)
    if AMX_FLAG in facts.cpu_flags:
        return PrecisionChoice(
            "mixed_bfloat16", f"CPU with AMX ({AMX_FLAG}): bfloat16 matmuls run on its tile unit"
        )
    if AVX512_BF16_FLAG in facts.cpu_flags and facts.cpu_vendor == AMD_VENDOR:
        return PrecisionChoice(
            "mixed_bfloat16",
            f"AMD CPU with {AVX512_BF16_FLAG}: bfloat16 trained faster than float32 on AMD EPYC",
        )
    if AVX512_BF16_FLAG in facts.cpu_flags:
        detail = (
            f"CPU with {AVX512_BF16_FLAG} but no AMX, not AMD: bfloat16 trained slower than "
            "float32 on such an Intel Xeon"
        )
    elif facts.cpu_flags:
        detail = f"CPU without AMX ({AMX_FLAG}): no fast bfloat16 matmuls"
    else:
        detail = "CPU flags unknown (no /proc/cpuinfo): no AMX to rely on"
    return PrecisionChoice("float32", detail)


def _gpu_precision(
    capabilities: tuple[tuple[int, int] | None, ...], cudnn_lstm: bool
) -> PrecisionChoice:
    if any(c is None for c in capabilities):
        return PrecisionChoice("float32", "GPU compute capability unknown: float32 is safe")
    lowest = min(c for c in capabilities if c is not None)
    name = f"GPU compute capability {lowest[0]}.{lowest[1]}"
    if lowest >= BFLOAT16_TENSOR_CORES and not cudnn_lstm:
        return PrecisionChoice("mixed_bfloat16", f"{name}: bfloat16 tensor cores")
    if lowest >= BFLOAT16_TENSOR_CORES:
        return PrecisionChoice(
            "mixed_float16",
            f"{name}: float16 tensor cores (cuDNN's LSTM has no bfloat16 kernel)",
        )
    if lowest >= FLOAT16_TENSOR_CORES:
        return PrecisionChoice("mixed_float16", f"{name}: float16 tensor cores")
    return PrecisionChoice("float32", f"{name}: no tensor cores (they start at 7.0)")


def resolve_precision(
    requested: str, facts: DeviceFacts, trained_with: str | None = None, cudnn_lstm: bool = True
) -> PrecisionChoice:
    """The policy a training run uses: an explicit request, a resumed run's, or auto.

    An explicit policy always wins. `auto` on an experiment that already has a
    saved config keeps the policy its checkpoints were trained with (the run
    continues as it started, on this machine or another); otherwise
    `choose_precision` decides.

    Args:
        requested: "auto" or a Keras policy name.
        facts: The device.
        trained_with: The resumed experiment's policy, or None for a new one.
        cudnn_lstm: Whether the model's LSTMs use cuDNN on a GPU.
    """
    resumed = trained_with not in (None, "", AUTO)
    if requested != AUTO and not (resumed and requested == trained_with):
        return PrecisionChoice(requested, "set explicitly (--precision or train.precision)")
    if resumed:
        return PrecisionChoice(
            trained_with, "a resumed experiment keeps the policy it was trained with"
        )
    return choose_precision(facts, cudnn_lstm)


def intra_op_threads(facts: DeviceFacts, environment: Mapping[str, str]) -> int | None:
    """How many threads TensorFlow should give one op (None: TensorFlow's default).

    1 on a CPU-only machine with at most 2 cores, else TensorFlow's default (as for a
    user who set `TF_NUM_INTRAOP_THREADS`; 0 there means the default too).

    There the two directions of a BiLSTM layer already run side by side as separate
    ops and fill both cores, so splitting an op over threads only adds hand-offs. On
    idle 2-core machines one thread per op trained the demo faster on both CPUs
    measured: a Xeon with AMX in mixed_bfloat16 and an AMD EPYC without AMX in
    float32 (benchmarks/README.md, "Training threads on a small CPU" and "Precision
    and threads on the machine at hand"). Next to other busy processes it can lose
    (fewer threads get a smaller share of a busy CPU); `TF_NUM_INTRAOP_THREADS=0`
    restores TensorFlow's default.

    Args:
        facts: The device.
        environment: The process environment.

    Returns:
        The thread count to set, or None to leave TensorFlow's choice.
    """
    if "TF_NUM_INTRAOP_THREADS" in environment or facts.gpu_capabilities:
        return None
    if facts.cpu_cores > SMALL_CPU_CORES:
        return None
    return 1


# ---------------------------------------------------------------------------
# Reading the facts (impure).


def read_device_facts(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> DeviceFacts:
    """Reads the CPU's name, flags and cores and the GPUs TensorFlow sees.

    Args:
        cpuinfo: Linux's CPU description (missing elsewhere: no flags).
    """
    import tensorflow as tf

    from stenograph.pipeline.threads import cpu_cores

    name, vendor, flags = parse_cpuinfo(_read_text(Path(cpuinfo)))
    capabilities = tuple(
        _compute_capability(tf.config.experimental.get_device_details(gpu))
        for gpu in tf.config.list_physical_devices("GPU")
    )
    return DeviceFacts(
        cpu_name=name or platform.processor() or platform.machine(),
        cpu_flags=flags,
        cpu_cores=cpu_cores(),
        gpu_capabilities=capabilities,
        cpu_vendor=vendor,
    )


def parse_cpuinfo(text: str) -> tuple[str, str, frozenset[str]]:
    """The first CPU's model name, vendor and flags from /proc/cpuinfo's text (x86 or ARM)."""
    name, vendor, flags = "", "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return name, vendor, flags


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _compute_capability(details: Mapping[str, Any]) -> tuple[int, int] | None:
    capability = details.get("compute_capability")
    if not capability:
        return None
    major, minor = capability
    return int(major), int(minor)
