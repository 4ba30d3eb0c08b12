"""The ``vlmdiff`` command: one sub-command per pipeline stage, each the same as its script.

| command | script | module |
|---|---|---|
| ``vlmdiff caption ...`` | ``python captioner.py ...`` | :mod:`vlmdiff.cli.captioner` |
| ``vlmdiff finetune-autoencoder ...`` | ``python finetune_autoencoder.py ...`` | :mod:`vlmdiff.cli.finetune_autoencoder` |
| ``vlmdiff build-model ...`` | ``python build_model.py ...`` | :mod:`vlmdiff.cli.build_model` |
| ``vlmdiff train ...`` | ``python train.py ...`` | :mod:`vlmdiff.cli.train` |
| ``vlmdiff test ...`` | ``python test.py ...`` | :mod:`vlmdiff.cli.test` |
| ``vlmdiff predict FOLDER ...`` | ``python test.py --predict FOLDER ...`` | :mod:`vlmdiff.cli.test` |
| ``vlmdiff demo ...`` | ``python scripts/demo.py ...`` | :mod:`vlmdiff.cli.demo` |

Each module has ``main(argv=None, prog=None) -> int``: it builds the stage's command line from its run config
(:mod:`vlmdiff.cli.builder`) and calls the stage's ``run(cfg)`` in :mod:`vlmdiff.pipelines`, where the stage's
code lives; torch is imported only there, after the arguments are parsed, so ``--help`` answers at once.
"""

from __future__ import annotations

import sys
from importlib import import_module

# sub-command -> (module under vlmdiff.cli, one-line description)
STAGES = {
    "caption": ("captioner", "caption a dataset's images with a VLM (captioner.py)"),
    "finetune-autoencoder": ("finetune_autoencoder",
                             "finetune the autoencoder on a dataset's normal images (finetune_autoencoder.py)"),
    "build-model": ("build_model", "assemble the training-start checkpoint from Stable Diffusion (build_model.py)"),
    "train": ("train", "train the semantic-guided network and the UNet decoder (train.py)"),
    "test": ("test", "test a trained model and report the metrics (test.py)"),
    "predict": ("test", "score the unlabeled images of a folder: vlmdiff predict FOLDER ... (test.py --predict)"),
    "demo": ("demo", "the whole pipeline at toy size on a CPU (scripts/demo.py)"),
}
HELP = ("usage: vlmdiff <command> [options]    (vlmdiff <command> --help: the command's options)\n\n"
        "VLMDiff's pipeline stages, in order:\n"
        + "".join(f"  {name:<22}{text}\n" for name, (_, text) in STAGES.items()))


def predict_argv(argv: list[str]) -> list[str] | None:
    """``vlmdiff predict FOLDER ...`` -> ``test.py --predict FOLDER ...``; None when no folder comes first."""
    if "--predict" in argv or any(a.startswith("--predict=") for a in argv) or {"-h", "--help"} & set(argv):
        return argv
    if not argv or argv[0].startswith("-"):
        return None
    return ["--predict", argv[0], *argv[1:]]


def main(argv: list[str] | None = None) -> int:
    """Run the stage named by the first argument with the remaining arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in STAGES:
        print(f"vlmdiff: unknown command {command!r}; one of: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    module = import_module(f"{__name__}.{STAGES[command][0]}")
    if command == "predict":
        rest = predict_argv(rest)
        if rest is None:
            print("vlmdiff predict: give the image folder first: vlmdiff predict FOLDER [test options]",
                  file=sys.stderr)
            return 2
    from vlmdiff.errors import cli_main

    return cli_main(lambda args: module.main(args, prog=f"vlmdiff {command}"), rest)
