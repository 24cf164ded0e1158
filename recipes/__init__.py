"""Recipes: the `stenograph` command line and what it composes from layers and pipeline.

A recipe takes a corpus from its own layout to a trained, evaluated and exported
model. This package holds the steps every corpus shares and one folder per corpus:

    stenograph prepare <corpus> ...      prepare.py: manifests, vocabulary, config.json
    stenograph train --config ...        train.py (data setup in data.py, the model
                                         in model.py, the experiment folder in
                                         experiment.py, settings in config.py)
    stenograph evaluate --exp-dir ...    evaluate.py: WER/CER and per-utterance reports
    stenograph lm build|tune ...         lm.py: KenLM n-gram LMs and their weights
    stenograph transcribe|export ...     transcribe.py, export.py: inference
    stenograph demo                      spoken_commands/: the CPU demo, end to end

`cli.main` is the console entry point. From Python, `train.train(config, exp_dir)`,
`evaluate.evaluate(exp_dir, manifest)` and `experiment.load_experiment(exp_dir)` do
what the commands do. Corpus folders (`librispeech/`, `ljspeech/`, `commonvoice/`,
`manifest/`, `spoken_commands/`) each hold a `recipe.py` with the `RECIPE` that
`stenograph prepare` runs (listed in `prepare.RECIPE_MODULES`).
"""
