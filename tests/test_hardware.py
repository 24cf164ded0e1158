"""Precision and threads chosen for the machine: decisions on faked device facts, and
where the choice is recorded (the experiment's config and hardware.json, demo_summary.json)."""

import argparse
import json

import keras
import pytest
import recipe_fixtures as fixtures

from stenograph.recipes import hardware
from stenograph.recipes import train as train_lib
from stenograph.recipes.config import PRECISIONS, ExperimentConfig, model_preset
from stenograph.recipes.hardware import DeviceFacts
from stenograph.recipes.prepare import PreparedPaths
from stenograph.recipes.spoken_commands import recipe

INTEL, AMD = "GenuineIntel", "AuthenticAMD"
AVX512_BF16 = frozenset({"avx512f", "avx512_bf16"})
AMX = DeviceFacts("Intel Xeon", AVX512_BF16 | {"amx_tile", "amx_bf16"}, 2, cpu_vendor=INTEL)
# AVX-512 BF16 without AMX: bfloat16 trained slower on the Xeon, faster on the EPYC.
XEON_WITHOUT_AMX = DeviceFacts("Intel Xeon", AVX512_BF16, 2, cpu_vendor=INTEL)
EPYC_WITH_BF16 = DeviceFacts("AMD EPYC", AVX512_BF16, 2, cpu_vendor=AMD)
OLDER_EPYC = DeviceFacts("AMD EPYC", frozenset({"avx2", "fma"}), 2, cpu_vendor=AMD)
OLDER_CPU = DeviceFacts("Intel Core", frozenset({"sse2", "avx2", "fma"}), 2, cpu_vendor=INTEL)
UNKNOWN_VENDOR = DeviceFacts("x86", AVX512_BF16, 2)  # no vendor_id: no AMD rule
NO_FLAGS = DeviceFacts("arm64", frozenset(), 8)  # macOS: no /proc/cpuinfo


def gpu(*capabilities):
    return DeviceFacts("Intel Xeon", AMX.cpu_flags, 8, tuple(capabilities))


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize(
    ("facts", "policy", "named"),
    [
        (AMX, "mixed_bfloat16", "amx_bf16"),
        (EPYC_WITH_BF16, "mixed_bfloat16", "AMD CPU with avx512_bf16"),
        (XEON_WITHOUT_AMX, "float32", "slower than float32 on such an Intel Xeon"),
        (UNKNOWN_VENDOR, "float32", "not AMD"),
        (OLDER_EPYC, "float32", "without AMX"),
        (OLDER_CPU, "float32", "without AMX"),
        (NO_FLAGS, "float32", "unknown"),
    ],
)
def test_cpus_get_bfloat16_only_where_it_trained_faster(facts, policy, named):
    choice = hardware.choose_precision(facts)
    assert choice.policy == policy
    assert named in choice.reason


@pytest.mark.parametrize(
    ("capability", "cudnn_lstm", "policy"),
    [
        ((6, 1), True, "float32"),  # Pascal: no tensor cores
        ((7, 0), True, "mixed_float16"),  # Volta
        ((7, 5), False, "mixed_float16"),  # Turing: no bfloat16 even without cuDNN
        ((8, 0), True, "mixed_float16"),  # Ampere, but cuDNN's LSTM has no bfloat16
        ((8, 0), False, "mixed_bfloat16"),
        ((9, 0), True, "mixed_float16"),  # Hopper
        ((9, 0), False, "mixed_bfloat16"),
    ],
)
def test_gpus_are_chosen_by_compute_capability(capability, cudnn_lstm, policy):
    choice = hardware.choose_precision(gpu(capability), cudnn_lstm=cudnn_lstm)
    assert choice.policy == policy
    assert f"{capability[0]}.{capability[1]}" in choice.reason  # the reason names it
    if capability >= (8, 0) and cudnn_lstm:
        assert "cuDNN" in choice.reason


def test_the_weakest_gpu_decides_and_an_unknown_capability_means_float32():
    assert hardware.choose_precision(gpu((8, 0), (7, 0))).policy == "mixed_float16"
    assert hardware.choose_precision(gpu((8, 0), (6, 0))).policy == "float32"
    unknown = hardware.choose_precision(gpu((8, 0), None))
    assert unknown.policy == "float32" and "unknown" in unknown.reason


@pytest.mark.parametrize(
    "facts", [AMX, EPYC_WITH_BF16, XEON_WITHOUT_AMX, NO_FLAGS, gpu((8, 0)), gpu((6, 1))]
)
@pytest.mark.parametrize("policy", [p for p in PRECISIONS if p != "auto"])
def test_an_explicit_precision_always_wins(facts, policy):
    choice = hardware.resolve_precision(policy, facts)
    assert choice.policy == policy and "explicitly" in choice.reason


def test_auto_on_a_resumed_experiment_keeps_its_policy():
    resumed = hardware.resolve_precision("auto", XEON_WITHOUT_AMX, trained_with="mixed_bfloat16")
    assert resumed.policy == "mixed_bfloat16" and "resumed" in resumed.reason
    fresh = hardware.resolve_precision("auto", XEON_WITHOUT_AMX, trained_with=None)
    assert fresh == hardware.choose_precision(XEON_WITHOUT_AMX)
    # Asking for another policy is passed on (and refused by check_resumable).
    other = hardware.resolve_precision("float32", AMX, trained_with="mixed_bfloat16")
    assert other.policy == "float32"


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize(
    ("facts", "environment", "expected"),
    [
        (AMX, {}, 1),  # the BiLSTM's two directions already fill both cores
        (DeviceFacts("x", AMX.cpu_flags, 1), {}, 1),
        (EPYC_WITH_BF16, {}, 1),  # measured to help on an idle EPYC without AMX too
        (DeviceFacts("x", frozenset(), 2), {}, 1),  # whatever the flags
        (NO_FLAGS, {}, None),  # 8 cores
        (DeviceFacts("x", AMX.cpu_flags, 4), {}, None),  # larger machines keep TF's choice
        (DeviceFacts("x", AMX.cpu_flags, 2, ((8, 0),)), {}, None),  # so do GPU machines
        (AMX, {"TF_NUM_INTRAOP_THREADS": "0"}, None),  # and a user's own setting
    ],
)
def test_one_thread_per_op_only_on_small_cpu_only_machines(facts, environment, expected):
    assert hardware.intra_op_threads(facts, environment) == expected


# --------------------------------------------------------------------------- reading facts


def test_cpuinfo_flags_and_name_are_read_on_x86_and_arm(tmp_path):
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel Xeon\n"
    x86 += "flags\t\t: fpu avx512_bf16 amx_bf16\n"
    x86 += "processor\t: 1\nvendor_id\t: Other\nmodel name\t: Intel Xeon\nflags\t\t: fpu\n"
    assert hardware.parse_cpuinfo(x86) == (
        "Intel Xeon",
        "GenuineIntel",
        frozenset({"fpu", "avx512_bf16", "amx_bf16"}),
    )
    arm = "processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd bf16\n"
    assert hardware.parse_cpuinfo(arm) == ("", "", frozenset({"fp", "asimd", "bf16"}))

    path = tmp_path / "cpuinfo"
    path.write_text(x86)
    facts = hardware.read_device_facts(path)
    assert facts.cpu_name == "Intel Xeon" and "amx_bf16" in facts.cpu_flags
    assert facts.cpu_vendor == "GenuineIntel"
    assert facts.cpu_cores >= 1
    assert hardware.read_device_facts(tmp_path / "missing").cpu_flags == frozenset()


# --------------------------------------------------------------------------- train


def train_arguments(*argv):
    parser = argparse.ArgumentParser()
    train_lib.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("flags", "facts", "expected"),
    [
        ((), AMX, "mixed_bfloat16"),  # the default is auto
        ((), XEON_WITHOUT_AMX, "float32"),
        ((), EPYC_WITH_BF16, "mixed_bfloat16"),
        (("--precision", "float32"), AMX, "float32"),
        (("--precision", "mixed_bfloat16"), XEON_WITHOUT_AMX, "mixed_bfloat16"),
        (("--set", "train.precision=mixed_float16"), AMX, "mixed_float16"),
    ],
)
def test_the_train_command_resolves_auto_and_keeps_an_explicit_precision(
    tmp_path, flags, facts, expected
):
    args = train_arguments("--exp-dir", str(tmp_path / "exp"), "--preset", "tiny", *flags)
    requested = train_lib.resolve_config(args)
    assert requested.train.precision == ("auto" if not flags else expected)
    config, choice = train_lib.resolve_run_precision(requested, None, facts)
    assert config.train.precision == choice.policy == expected


@pytest.fixture
def restore_policy():
    policy = keras.mixed_precision.dtype_policy()
    yield
    keras.mixed_precision.set_dtype_policy(policy)


def test_training_records_the_choice_and_a_resumed_run_keeps_it(
    tmp_path, monkeypatch, restore_policy
):
    manifest = fixtures.write_manifest_corpus(tmp_path / "data", fixtures.PHRASES[:2])
    config = ExperimentConfig(model=model_preset("tiny")).override(
        {"data.train_manifest": str(manifest), "train.verbose": 0}
    )
    exp_dir = tmp_path / "exp"
    monkeypatch.setattr(hardware, "read_device_facts", lambda: AMX)
    train_lib.TrainingRun(config, exp_dir).setup()
    saved = ExperimentConfig.load(exp_dir / "config.json")
    assert saved.train.precision == "mixed_bfloat16"  # the resolved policy, not "auto"
    assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
    record = json.loads((exp_dir / hardware.HARDWARE_FILE).read_text())
    assert record["precision"] == "mixed_bfloat16" and "amx_bf16" in record["precision_reason"]
    assert record["runs"][0]["device"]["cpu_flags"] == ["amx_bf16", "avx512_bf16"]

    # Resumed on a machine where auto would pick float32: it keeps the policy...
    monkeypatch.setattr(hardware, "read_device_facts", lambda: OLDER_EPYC)
    run = train_lib.TrainingRun(config, exp_dir)
    run.setup()
    assert run.config.train.precision == "mixed_bfloat16"
    record = json.loads((exp_dir / hardware.HARDWARE_FILE).read_text())
    assert "resumed" in record["precision_reason"]
    assert [r["device"]["cpu_name"] for r in record["runs"]] == ["Intel Xeon", "AMD EPYC"]
    # ...and an explicit other policy is refused, not silently changed.
    with pytest.raises(ValueError, match="train.precision"):
        train_lib.TrainingRun(config.override({"train.precision": "float32"}), exp_dir).setup()


# --------------------------------------------------------------------------- demo


@pytest.fixture
def demo_without_stages(tmp_path, monkeypatch):
    """`run_demo` with every stage but the precision's resolution faked (no training)."""
    trained = []

    def prepare_data(out, corpus, extra_train=()):
        paths = PreparedPaths(out / "data")
        paths.data_dir.mkdir(parents=True)
        for split in ("train", "dev", "test"):
            line = {"id": f"{split}-1", "audio_path": "a.flac", "text": "lights on", "speaker": "s"}
            paths.manifest(split).write_text(json.dumps(line) + "\n")
        base = ExperimentConfig(model=model_preset("small")).override(recipe.CONFIG_OVERRIDES)
        base.save(paths.config)
        return paths

    def train_with_budget(config, exp_dir, minutes, num_train):
        trained.append(config.train.precision)
        return {"steps": 1}

    score = {"wer": 0.1, "cer": 0.05, "word_errors": 1, "words": 10, "utterances": 1}
    fakes = {
        "prepare_data": prepare_data,
        "train_with_budget": train_with_budget,
        "lm_unavailable_reason": lambda: "no LM in this test",
        "evaluate_decoders": lambda *a: {"beam": {**score, "report": "r.jsonl"}},
        "speaker_error_rates": lambda *a: {},
        "export_model": lambda *a: {"saved_model": "export"},
        "transcribe_examples": lambda *a: [],
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(recipe, name, fake)
    return trained


@pytest.mark.parametrize(
    ("argv", "facts", "expected"),
    [
        ((), AMX, "mixed_bfloat16"),
        ((), XEON_WITHOUT_AMX, "float32"),
        ((), EPYC_WITH_BF16, "mixed_bfloat16"),
        (("--precision", "float32"), AMX, "float32"),
        (("--precision", "mixed_bfloat16"), XEON_WITHOUT_AMX, "mixed_bfloat16"),
    ],
)
def test_demo_summary_records_the_precision_used(
    tmp_path, monkeypatch, capsys, demo_without_stages, argv, facts, expected
):
    monkeypatch.setattr(hardware, "read_device_facts", lambda: facts)
    parser = argparse.ArgumentParser()
    recipe.add_demo_arguments(parser)
    out = tmp_path / "demo"
    args = parser.parse_args(["--out", str(out), "--extra", "0", *argv])
    assert recipe.run(args) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["precision"] == expected
    assert summary["precision_reason"] == hardware.resolve_precision(args.precision, facts).reason
    assert f"precision {expected} (" in capsys.readouterr().out  # said at the start
    # Training gets the request; it resolves "auto" itself, the same way.
    assert demo_without_stages == [args.precision]
