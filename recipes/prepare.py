"""The shared recipe runner and the `stenograph prepare` command.

A recipe prepares a corpus in numbered stages; each finished stage leaves a
`.done` marker in `<data_dir>/.stages/`, so rerunning the same command skips the
work already done, `--stage N` starts (and `--stop-stage M` stops) anywhere, and
`--force` redoes stages. Every recipe runs the same stages:

    1. import      the corpus' own layout -> raw/<split>.jsonl   (recipe-specific)
    2. check       header-probe every audio file and normalise every transcript;
                   usable utterances -> <split>.jsonl, the rest -> prepare_report.jsonl
                   (one JSON line per skipped item: id, kind, reason, source, line)
    3. vocabulary  characters of the training transcripts -> vocabulary.json
    4. config      a ready-to-train config.json (preset + manifests + vocabulary)

Then: `stenograph train --config <data_dir>/config.json --exp-dir exp/<name>`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stenograph.pipeline.audio import AudioDecodeError, audio_info
from stenograph.pipeline.errors import Problem, ProblemReport
from stenograph.pipeline.files import atomic_write_text
from stenograph.pipeline.manifest import Utterance, read_manifest, write_manifest
from stenograph.pipeline.text import TextNormalizer, Vocabulary

from .config import ExperimentConfig, model_preset

_log = logging.getLogger("stenograph.prepare")

# Recipe name -> module exposing `RECIPE` (a `Recipe`).
RECIPE_MODULES: dict[str, str] = {
    "librispeech": "stenograph.recipes.librispeech.recipe",
    "ljspeech": "stenograph.recipes.ljspeech.recipe",
    "commonvoice": "stenograph.recipes.commonvoice.recipe",
    "manifest": "stenograph.recipes.manifest.recipe",
}

SplitImporter = Callable[[argparse.Namespace], dict[str, list[Utterance]]]


@dataclass
class Stage:
    """One rerunnable preparation step."""

    name: str
    run: Callable[[], None]


@dataclass
class Recipe:
    """What differs between corpora; everything else is shared.

    Attributes:
        name: Recipe name (`stenograph prepare NAME`).
        description: One line for `--help`.
        add_arguments: Adds the recipe's own options (e.g. `--corpus`) to its parser.
        import_splits: Reads the corpus in its own layout; returns split name ->
            utterances.
        train_splits: Splits concatenated into the training manifest.
        valid_split: Split evaluated after every epoch.
        test_splits: Splits for `stenograph evaluate`.
        preset: Default model preset.
        config_overrides: Dotted overrides applied to the default config.
    """

    name: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    import_splits: SplitImporter
    train_splits: list[str]
    valid_split: str
    test_splits: list[str] = field(default_factory=list)
    preset: str = "small"
    config_overrides: dict[str, Any] = field(default_factory=dict)


def run_stages(
    stages: Sequence[Stage],
    marker_dir: Path,
    *,
    start_stage: int = 1,
    stop_stage: int | None = None,
    force: bool = False,
) -> list[str]:
    """Runs numbered stages in order, skipping those already marked done.

    Args:
        stages: The stages; the first is stage 1.
        marker_dir: Where `NN-name.done` markers are kept.
        start_stage: First stage to consider.
        stop_stage: Last stage to consider (None = all).
        force: Rerun stages even if they are marked done.

    Returns:
        Names of the stages that actually ran.
    """
    marker_dir.mkdir(parents=True, exist_ok=True)
    ran = []
    last = len(stages) if stop_stage is None else stop_stage
    for number, stage in enumerate(stages, start=1):
        if number < start_stage or number > last:
            continue
        marker = marker_dir / f"{number:02d}-{stage.name}.done"
        if marker.exists() and not force:
            _log.info("stage %d (%s): done already, skipping", number, stage.name)
            continue
        _log.info("stage %d (%s): running", number, stage.name)
        stage.run()
        atomic_write_text(marker, "done\n")
        ran.append(stage.name)
    return ran


# ---------------------------------------------------------------------------
# Shared stages.


def probe_audio(utterance: Utterance) -> Utterance | Problem:
    """Checks an utterance's audio header; fills in a missing duration.

    Returns:
        The utterance with its duration if usable, else the `Problem` with it.
    """

    def problem(kind: str, message: str) -> Problem:
        return Problem(utterance.audio_path, None, kind, message, utterance.id)

    try:
        info = audio_info(utterance.audio_path)
    except AudioDecodeError as error:
        return problem("unreadable_audio", str(error))
    available = info.duration - utterance.offset
    duration = utterance.duration if utterance.duration is not None else available
    if not math.isfinite(duration) or duration <= 0 or available <= 0:
        message = f"no audio after offset {utterance.offset}s (file lasts {available:.3f}s)"
        return problem("no_audio", message)
    return dataclasses.replace(utterance, duration=round(min(duration, available), 3))


def _probe_all(
    utterances: Sequence[Utterance], split: str, workers: int = 8
) -> list[Utterance | Problem]:
    """`probe_audio` of every utterance, in order; threads, since it waits on file I/O.

    A progress bar (stderr, on a terminal) counts the files: a 100k-file corpus
    takes minutes, more on network storage.
    """
    from tqdm.auto import tqdm

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(probe_audio, utterances)
        bar = tqdm(
            results,
            total=len(utterances),
            desc=f"checking {split}",
            unit="file",
            leave=False,
            disable=None,
        )  # fmt: skip  (None: only on a terminal)
        return list(bar)


def check_split(
    utterances: Sequence[Utterance], normalizer: TextNormalizer, split: str
) -> tuple[list[Utterance], list[Problem]]:
    """Keeps utterances with readable audio and a non-empty normalised transcript.

    Returns:
        `(kept, skipped)`: the usable utterances, and a `Problem` for each other one.
    """
    kept: list[Utterance] = []
    skipped: list[Problem] = []
    for utterance, checked in zip(utterances, _probe_all(utterances, split), strict=True):
        if isinstance(checked, Utterance) and not normalizer(utterance.text).strip():
            message = "transcript is empty after normalisation"
            checked = Problem(utterance.audio_path, None, "empty_transcript", message, utterance.id)
        if isinstance(checked, Problem):
            skipped.append(checked)
        else:
            kept.append(checked)
    return kept, skipped


def common_audio_folders(manifests: Sequence[Path], min_depth: int = 2) -> str:
    """The folders holding every audio file of the given (prepared) manifests.

    Audio from one corpus shares one deep folder; audio from several places (e.g.
    a shipped corpus and generated data elsewhere) gets one folder each, never a
    shallow one like ``/`` or ``/tmp`` that would confine nothing. Training and
    evaluation confine manifest audio paths to them, so a manifest edited or
    swapped later cannot make them read files from elsewhere.

    Args:
        manifests: Manifests written by the check stage (missing ones are ignored).
        min_depth: Fewest path components a merged folder may have.

    Returns:
        Absolute folders joined with `os.pathsep` (the form of `data.audio_root`),
        or "" when the manifests hold no audio.
    """
    folders = sorted(
        {
            os.path.dirname(utterance.audio_path)
            for path in manifests
            if path.is_file()
            # Our own output: its paths were confined when the corpus was imported.
            for utterance in read_manifest(path, allow_outside_root=True)
        }
    )
    roots: list[str] = []
    for folder in folders:
        for index, root in enumerate(roots):
            shared = os.path.commonpath([root, folder])
            if len(Path(shared).parts) > min_depth:  # parts[0] is "/"
                roots[index] = shared
                break
        else:
            roots.append(folder)
    return os.pathsep.join(roots)


@dataclass
class PreparedPaths:
    """Where a prepared corpus lives."""

    data_dir: Path

    def raw(self, split: str) -> Path:
        """Manifest of a split as imported, before checking."""
        return self.data_dir / "raw" / f"{split}.jsonl"

    def manifest(self, split: str) -> Path:
        """Manifest of a split after checking."""
        return self.data_dir / f"{split}.jsonl"

    @property
    def train_manifest(self) -> Path:
        """All training splits in one manifest."""
        return self.data_dir / "train.jsonl"

    @property
    def vocabulary(self) -> Path:
        """The vocabulary file."""
        return self.data_dir / "vocabulary.json"

    @property
    def config(self) -> Path:
        """The ready-to-train experiment config."""
        return self.data_dir / "config.json"

    @property
    def report(self) -> Path:
        """Skipped utterances with reasons."""
        return self.data_dir / "prepare_report.jsonl"

    @property
    def import_report(self) -> Path:
        """Bad lines of the corpus' own files found by stage 1 (merged into `report`)."""
        return self.data_dir / "import_report.jsonl"


def recipe_stages(
    recipe: Recipe, args: argparse.Namespace, paths: PreparedPaths, preset: str
) -> list[Stage]:
    """The four standard stages of a recipe (see the module docstring)."""
    normalizer = TextNormalizer()

    def import_stage() -> None:
        problems = ProblemReport(log=True)
        # Recipes hand this to their readers, so bad lines of the corpus' own files
        # reach prepare_report.jsonl, not only the log.
        args.on_problem = problems.add
        splits = recipe.import_splits(args)
        problems.write(paths.import_report)
        has_train = any(s in splits for s in recipe.train_splits)
        if not has_train or recipe.valid_split not in splits:
            raise ValueError(
                f"Recipe {recipe.name} needs a training split (one of {recipe.train_splits}) "
                f"and the {recipe.valid_split!r} split; the corpus has {sorted(splits)}. "
                f"Received: corpus={getattr(args, 'corpus', None)}"
            )
        for split, utterances in splits.items():
            write_manifest(paths.raw(split), utterances, relative_paths=False)
            _log.info("imported %s: %d utterances", split, len(utterances))

    def check_stage() -> None:
        report = ProblemReport()
        if paths.import_report.is_file():
            for problem in ProblemReport.read(paths.import_report):
                report.add(problem)
        train: list[Utterance] = []
        for raw in sorted((paths.data_dir / "raw").glob("*.jsonl")):
            split = raw.stem
            utterances = read_manifest(raw, allow_outside_root=True)
            kept, skipped = check_split(utterances, normalizer, split)
            write_manifest(paths.manifest(split), kept, relative_paths=False)
            for problem in skipped:
                report.add(problem)
            if split in recipe.train_splits:
                train += kept
            _log.info("checked %s: %d usable, %d skipped", split, len(kept), len(skipped))
        if set(recipe.train_splits) != {"train"}:
            write_manifest(paths.train_manifest, train, relative_paths=False)
        report.write(paths.report)
        if report:
            _log.warning(
                "%d manifest lines or utterances skipped; reasons in %s",
                len(report),
                paths.report,
            )

    def vocabulary_stage() -> None:
        texts = [u.text for u in read_manifest(paths.train_manifest, allow_outside_root=True)]
        if not texts:
            raise ValueError(f"No usable training utterances in {paths.train_manifest}.")
        vocabulary = Vocabulary.from_transcripts(texts, normalizer)
        vocabulary.save(paths.vocabulary)
        _log.info("vocabulary: %d tokens + blank", len(vocabulary.tokens) - 1)

    def config_stage() -> None:
        # Every split's checked manifest; the training manifest is made from them.
        splits = [raw.stem for raw in sorted((paths.data_dir / "raw").glob("*.jsonl"))]
        manifests = [paths.manifest(split) for split in splits]
        config = ExperimentConfig(model=model_preset(preset)).override(
            {
                **recipe.config_overrides,
                "data.train_manifest": str(paths.train_manifest.absolute()),
                "data.valid_manifest": str(paths.manifest(recipe.valid_split).absolute()),
                "data.vocabulary": str(paths.vocabulary.absolute()),
                # train/evaluate refuse audio outside the folder this corpus came from.
                "data.audio_root": common_audio_folders(manifests),
            }
        )
        config.save(paths.config)
        _log.info(
            "wrote %s; next: stenograph train --config %s --exp-dir exp/%s",
            paths.config,
            paths.config,
            recipe.name,
        )

    return [
        Stage("import", import_stage),
        Stage("check", check_stage),
        Stage("vocabulary", vocabulary_stage),
        Stage("config", config_stage),
    ]


def prepare(
    recipe: Recipe,
    args: argparse.Namespace,
    data_dir: str | Path,
    *,
    preset: str | None = None,
    start_stage: int = 1,
    stop_stage: int | None = None,
    force: bool = False,
) -> PreparedPaths:
    """Prepares a corpus for training with a recipe.

    Args:
        recipe: The recipe (e.g. `stenograph.recipes.librispeech.recipe.RECIPE`).
        args: The recipe's own options (see `Recipe.add_arguments`).
        data_dir: Output folder for manifests, vocabulary, config and markers.
        preset: Model preset for the config (default: the recipe's).
        start_stage: First stage to run.
        stop_stage: Last stage to run.
        force: Rerun stages marked done.

    Returns:
        The paths of the prepared data.
    """
    paths = PreparedPaths(Path(data_dir))
    stages = recipe_stages(recipe, args, paths, preset or recipe.preset)
    run_stages(
        stages,
        paths.data_dir / ".stages",
        start_stage=start_stage,
        stop_stage=stop_stage,
        force=force,
    )
    return paths


def load_recipe(name: str) -> Recipe:
    """Imports a recipe by name (a key of `RECIPE_MODULES`)."""
    if name not in RECIPE_MODULES:
        raise ValueError(
            f"Unknown recipe. Expected one of {sorted(RECIPE_MODULES)}. Received: {name!r}"
        )
    return importlib.import_module(RECIPE_MODULES[name]).RECIPE


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `stenograph prepare RECIPE ...`."""
    parser = subparsers.add_parser(
        "prepare",
        help="prepare a corpus for training (numbered, rerunnable stages)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    recipes = parser.add_subparsers(dest="recipe", metavar="RECIPE", required=True)
    for name in RECIPE_MODULES:
        try:
            recipe = load_recipe(name)
        except ModuleNotFoundError:
            continue
        sub = recipes.add_parser(name, help=recipe.description, description=recipe.description)
        recipe.add_arguments(sub)
        sub.add_argument("--data-dir", required=True, type=Path, help="output folder")
        sub.add_argument("--preset", default=None, help=f"model preset (default {recipe.preset})")
        sub.add_argument("--stage", type=int, default=1, help="first stage to run (1-4)")
        sub.add_argument("--stop-stage", type=int, default=None, help="last stage to run")
        sub.add_argument("--force", action="store_true", help="rerun stages already done")
        sub.add_argument(
            "--shards",
            type=int,
            default=0,
            help="also write the training data as N TFRecord shards (data_dir/shards/train) "
            "and point config.json at them (see `stenograph shard`)",
        )
        sub.set_defaults(handler=run, recipe_object=recipe)


def run(args: argparse.Namespace) -> int:
    """Runs `stenograph prepare RECIPE`."""
    paths = prepare(
        args.recipe_object,
        args,
        args.data_dir,
        preset=args.preset,
        start_stage=args.stage,
        stop_stage=args.stop_stage,
        force=args.force,
    )
    if args.shards:
        from .shard import shard_prepared  # a thin hook: sharding lives in recipes/shard.py

        shard_prepared(paths, args.shards, force=args.force)
    print(f"prepared {args.recipe} in {paths.data_dir}")
    return 0
