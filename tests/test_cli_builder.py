"""The command-line builder (vlmdiff/cli/builder.py): every setting of a stage's run config is a flag with its
help and default, choices come from the registries, key=value works anywhere, misspellings name the closest
setting, errors are one line, and --print_config prints what a run would use."""

from dataclasses import dataclass, fields

import pytest
import yaml

from vlmdiff.cli import build_model as build_cli
from vlmdiff.cli import captioner as caption_cli
from vlmdiff.cli import finetune_autoencoder as ae_cli
from vlmdiff.cli import test as test_cli
from vlmdiff.cli import train as train_cli
from vlmdiff.cli.builder import ConfigCommandLine, UsageError, field_default, show
from vlmdiff.errors import cli_main
from vlmdiff.features import EXTRACTORS
from vlmdiff.run_config import AEConfig, BuildConfig, CaptionerConfig, TestConfig, TrainConfig, result_keys, setting

STAGES = {"train": (train_cli, TrainConfig), "test": (test_cli, TestConfig)}
ALL_STAGES = {**STAGES, "finetune-autoencoder": (ae_cli, AEConfig), "caption": (caption_cli, CaptionerConfig),
              "build-model": (build_cli, BuildConfig)}


def help_entries(module, capsys, monkeypatch) -> dict[str, str]:
    """``--help`` of a stage as {first option string: the entry's text on one line}."""
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"], prog="stage")
    assert exit_.value.code == 0
    entries, current = {}, None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = line.strip()
        elif line.startswith("    ") and current:
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("stage", list(ALL_STAGES))
def test_every_setting_is_in_the_help_with_its_default(stage, capsys, monkeypatch):
    module, schema = ALL_STAGES[stage]
    entries = help_entries(module, capsys, monkeypatch)
    for f in fields(schema):
        entry = entries.get(f"--{f.name}")
        assert entry is not None, f"--{f.name} missing from {stage} --help"
        assert f"(default: {show(field_default(f))})" in entry, entry
        assert len(entry) > len(f"--{f.name}") + 30, f"--{f.name} has no help text"
    if stage == "build-model":  # --config is the run config here too; the model config is a setting
        assert entries["--config"].startswith("--config FILE") and "BuildConfig" in entries["--config"]
        assert "(default: configs/vlmdiff.yaml)" in entries["--model_config"]
        assert entries["--also_ckpt"].startswith("--also_ckpt, --no_also_ckpt") and "(default: null)" in entries["--ae"]
        return
    if stage == "caption":
        assert "(default: pd)" in entries["--prompt_type"] and entries["--resume"].startswith("--resume, --no_resume")
        return
    # written out: the value a user types
    assert entries["--progress_bar" if stage != "test" else "--overwrite"].split()[1].startswith("--no_")
    if stage not in STAGES:
        assert "(default: 256)" in entries["--image_size"] and "(default: null)" in entries["--crop_size"]
        return
    assert "(default: 256)" in entries["--image_size"] and "--image_size N" in entries["--image_size"]
    assert "(default: mvtec)" in entries["--data_set"]
    assert entries["--use_captions"].startswith("--use_captions, --no_use_captions")
    assert "(default: false)" in entries["--use_captions"]


def test_defaults_are_shown_as_they_are_typed():
    assert [show(v) for v in (None, True, False, "", "x", 1e-5, [1, 2])] == \
           ["null", "true", "false", "''", "x", "1e-05", "[1,2]"]


def test_the_reference_names_are_documented_aliases(capsys, monkeypatch):
    entries = help_entries(test_cli, capsys, monkeypatch)
    assert entries["--caption_folder"].startswith("--caption_folder TEXT, --caption_model TEXT")
    assert "--caption_model: the reference's name" in entries["--caption_folder"]
    assert "--use_dino" in entries and "--dino_version" in entries
    cli = test_cli.command_line()
    assert cli.resolve(cli.parse_args(["--caption_model", "_blip"])).caption_folder == "_blip"
    assert test_cli.resolve(cli, cli.parse_args(["--use_dino", "--dino_version", "v1b16"])).scorer == "v1b16"


def test_choices_come_from_the_registries():
    from vlmdiff import metrics, model, optim, precision
    from vlmdiff.captioning import BACKENDS, DTYPES, PROMPTS
    from vlmdiff.data import DATASETS
    from vlmdiff.features import EXTRACTORS

    registries = {(TestConfig, "scorer"): EXTRACTORS, (TestConfig, "data_set"): DATASETS,
                  (TrainConfig, "data_set"): DATASETS, (TestConfig, "precision"): tuple(precision.PRECISIONS),
                  (TestConfig, "start_mode"): model.START_MODES, (TestConfig, "metrics_mode"): metrics.MODES,
                  (TrainConfig, "optimizer"): optim.OPTIMIZERS, (AEConfig, "data_set"): DATASETS,
                  (CaptionerConfig, "backend"): BACKENDS, (CaptionerConfig, "prompt_type"): tuple(PROMPTS),
                  (CaptionerConfig, "dtype"): DTYPES}
    for (schema, name), names in registries.items():
        cli = ConfigCommandLine(schema)
        assert "{" + ",".join(names) + "}" in cli.parser.format_help(), name
        for value in names:
            assert getattr(cli.parse_args([f"--{name}", value]), name) == value
        with pytest.raises(UsageError, match=rf"argument --{name}: 'nope' is not a valid {name}"):
            cli.parse_args([f"--{name}", "nope"])


def test_a_registry_function_is_read_when_the_command_line_is_built():
    registry = {"alpha": None}

    @dataclass
    class Toy:
        backend: str = setting("alpha", "a backend", choices=lambda: tuple(registry))

    registry["beta"] = None  # registered after the schema was declared
    assert ConfigCommandLine(Toy).parse_args(["--backend", "beta"]).backend == "beta"
    with pytest.raises(UsageError, match="'betta' is not a valid backend; did you mean 'beta'"):
        ConfigCommandLine(Toy).parse_args(["--backend", "betta"])


@pytest.mark.parametrize("argv", [
    ["image_size=64", "seed=3", "--data_set", "visa", "--ddim_steps", "2"],  # before
    ["--data_set", "visa", "image_size=64", "--ddim_steps", "2", "seed=3"],  # between
    ["--data_set", "visa", "--ddim_steps", "2", "image_size=64", "seed=3"],  # after
    ["seed=3", "--data_set", "visa", "image_size=64", "--ddim_steps", "2"],  # all over
])
def test_key_value_anywhere(argv):
    cli = test_cli.command_line()
    cfg = test_cli.resolve(cli, cli.parse_args([*argv, "--save_visuals", "classes=[a,b]"]))
    assert (cfg.image_size, cfg.seed, cfg.data_set, cfg.ddim_steps) == (64, 3, "visa", 2)
    assert cfg.save_visuals is True and cfg.classes == ["a", "b"]


def test_later_sources_win(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("data_path: data\nimage_size: 128\nbatch_size: 2\nlearning_rate: 0.5\n")
    cli = train_cli.command_line()
    cfg = cli.resolve(cli.parse_args(["batch_size=6", "--config", str(run), "--batch_size", "4", "--max_epochs", "3",
                                      "--no_progress_bar", "--devices", "0,1", "--classes", "bottle,cable"]))
    assert (cfg.image_size, cfg.batch_size, cfg.learning_rate, cfg.max_epochs) == (128, 6, 0.5, 3)
    assert cfg.progress_bar is False and cfg.devices == "0,1" and cfg.classes == ["bottle", "cable"]
    assert cli.resolve(cli.parse_args(["--devices", "2", "data_path=data"])).devices == 2


@pytest.mark.parametrize("argv, message", [
    (["imge_size=64"], "error: unknown setting 'imge_size'; did you mean 'image_size'?"),
    (["--imge_size", "64"], "error: unknown flag '--imge_size'; did you mean '--image_size'?"),
    (["--data_set", "mvtc"], "error: argument --data_set: 'mvtc' is not a valid data_set; did you mean 'mvtec'?"),
    (["--image_size", "big"], "error: argument --image_size: invalid int value: 'big'"),
    (["image_size=big"], "error: overrides: image_size: Value 'big' of type 'str' could not be converted to Integer"),
    (["64"], "error: unexpected argument '64': settings are --name value or name=value"),
])
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_misspelling_is_one_line_naming_the_closest_setting(stage, argv, message, tmp_path, capsys):
    module, _ = STAGES[stage]
    status = cli_main(module.main, ["--output_dir", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "out").exists()


def test_a_value_outside_the_choices_from_a_file_or_key_value_is_refused(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text("scorer: v1s9\n")
    assert cli_main(test_cli.main, ["--config", str(run), "--output_dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines()[0].endswith("; did you mean 'v1s8'?")
    assert cli_main(caption_cli.main, ["--data_path", str(tmp_path), "data_set=cifar10"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: data_set: 'cifar10' is not one of mvtec, visa, realiad, coco, custom"]
    assert not (tmp_path / "out").exists()


def test_a_misspelt_key_of_a_config_file_names_the_file_and_the_closest_setting(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text("data_set: visa\nlearning_rte: 1.0e-4\n")
    assert cli_main(train_cli.main, ["--config", str(run), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {run}: unknown setting 'learning_rte'; did you mean 'learning_rate'?"]
    assert not (tmp_path / "out").exists()


def test_a_missing_required_setting_is_one_line_naming_its_flag(tmp_path, capsys):
    @dataclass
    class Toy:
        sd: str = setting("", "Stable Diffusion checkpoint", required=True)
        out: str = setting("model.safetensors", "output file")

    cli = ConfigCommandLine(Toy)
    written = tmp_path / "written"

    def main(argv):
        cfg = cli.resolve(cli.parse_args(argv))
        written.write_text(cfg.sd)
        return 0

    assert cli_main(main, ["--out", "x.ckpt"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: --sd is required: Stable Diffusion checkpoint"]
    assert not written.exists()
    assert cli_main(main, ["sd=weights.ckpt"]) == 0 and written.read_text() == "weights.ckpt"
    for module in (caption_cli, ae_cli, train_cli):  # the stages that always read a dataset
        assert cli_main(module.main, ["--output_dir", str(tmp_path / "out"), "batch_size=2"]) == 2
        assert capsys.readouterr().err.splitlines() == ["error: --data_path is required: dataset root folder"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", ["train", "test", "finetune-autoencoder"])
def test_print_config_prints_the_resolved_settings(stage, tmp_path, capsys):
    module, schema = ALL_STAGES[stage]
    with pytest.raises(SystemExit) as exit_:
        module.main(["--print_config", "--data_path", str(tmp_path), "image_size=96",
                     "--output_dir", str(tmp_path / "o")])
    assert exit_.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert list(printed) == [f.name for f in fields(schema)]
    assert printed["image_size"] == 96 and printed["data_path"] == str(tmp_path)
    assert {k: v for k, v in printed.items() if k not in ("image_size", "data_path", "output_dir")} == \
           {f.name: field_default(f) for f in fields(schema) if f.name not in ("image_size", "data_path", "output_dir")}
    assert not (tmp_path / "o").exists()


def test_the_fingerprint_reads_the_results_tags():
    from vlmdiff import testing

    # the keys stored in every test run's run.json (earlier versions: resume_path for checkpoint, read as it)
    assert testing.RESULT_KEYS == result_keys(TestConfig) == (
        "checkpoint", "model_config", "data_set", "data_path", "coco_part", "image_size", "use_captions",
        "caption_folder", "only_mid_control", "scorer", "scorer_weights", "ddim_steps", "guidance_scale",
        "start_timestep", "start_mode", "sigma", "seed", "precision", "channels_last", "compile", "batch_invariant")
    assert set(testing.fingerprint(TestConfig())) == set(testing.RESULT_KEYS)


# the demo's flags before its command line was built from DemoConfig: each keeps its name and its default
DEMO_FLAGS = {"work_dir": "runs/demo", "data_path": None, "classes": None, "image_size": 128, "n_train": 24,
              "n_test_good": 6, "n_test_defect": 10, "model_config": None, "sd": None, "sgn": None, "ae_init": None,
              "ae_steps": 100,
              "ae_crop": 0, "ae_batch_size": 8, "ae_learning_rate": 3e-4, "ae_perceptual": "effnet_lite0",
              "epochs": 20, "batch_size": 8,
              "learning_rate": 1e-3, "only_mid_control": True, "captions": "template", "ddim_steps": 10, "scorer": "effnet_lite0_s16",
              "test_batch_size": 8, "threads": 0, "seed": 0}


def test_the_demo_lists_every_setting_with_its_default(capsys, monkeypatch):
    from vlmdiff.cli import demo as demo_cli
    from vlmdiff.run_config import DemoConfig

    entries = help_entries(demo_cli, capsys, monkeypatch)
    assert [f.name for f in fields(DemoConfig)] == list(DEMO_FLAGS)
    for f in fields(DemoConfig):
        entry = entries.get(f"--{f.name}")
        assert entry is not None, f"--{f.name} missing from demo --help"
        assert f"(default: {show(DEMO_FLAGS[f.name])})" in entry, entry
        assert len(entry) > len(f"--{f.name}") + 30, f"--{f.name} has no help text"
    assert "{" + ",".join(EXTRACTORS) + "}" in entries["--scorer"]
    assert "--captions {template,none}" in entries["--captions"]
    assert "--ae_perceptual {effnet_lite0,none}" in entries["--ae_perceptual"]
    assert "DemoConfig" in entries["--config"] and "--print_config" in entries


def test_the_demo_takes_its_flags_as_before_and_as_settings(tmp_path, capsys):
    from vlmdiff.cli import demo as demo_cli

    cli = demo_cli.command_line()
    before = ["--work_dir", "w", "--classes", "disc", "weave", "--n_train", "8", "--only_mid_control", "false",
              "--captions", "none", "--sd", "", "--ae_learning_rate", "1e-4", "--threads", "1"]
    cfg = cli.resolve(cli.parse_args(before))
    assert (cfg.work_dir, cfg.classes, cfg.n_train, cfg.only_mid_control, cfg.captions, cfg.sd) == \
           ("w", ["disc", "weave"], 8, False, "none", "")
    assert (cfg.ae_learning_rate, cfg.threads, cfg.epochs) == (1e-4, 1, 20)
    # the same settings as key=value, from a file, and a list flag followed by key=value
    run = tmp_path / "demo.yaml"
    run.write_text("classes: [disc]\nepochs: 2\n")
    cfg = cli.resolve(cli.parse_args(["--config", str(run), "--classes", "weave", "grass", "n_train=4",
                                      "only_mid_control=false"]))
    assert (cfg.classes, cfg.epochs, cfg.n_train, cfg.only_mid_control) == (["weave", "grass"], 2, 4, False)
    assert cli.resolve(cli.parse_args(["--only_mid_control", "true", "--classes", "a,b"])).classes == ["a", "b"]
    with pytest.raises(SystemExit) as exit_:
        demo_cli.main(["--print_config", "--work_dir", str(tmp_path / "w"), "epochs=3"])
    assert exit_.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == {**DEMO_FLAGS, "work_dir": str(tmp_path / "w"), "epochs": 3}
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("argv, message", [
    (["n_tran=8"], "error: unknown setting 'n_tran'; did you mean 'n_train'?"),
    (["--ae_stpes", "4"], "error: unknown flag '--ae_stpes'; did you mean '--ae_steps'?"),
    (["--captions", "templat"], "error: argument --captions: 'templat' is not a valid captions; did you mean "
                                "'template'?"),
    (["--only_mid_control", "maybe"], "error: unexpected argument 'maybe'"),
    (["--only_mid_control=maybe"], "error: argument --only_mid_control: 'maybe' is not true or false"),
    (["--classes", "epochs=2"], "error: argument --classes: expected at least one value"),
])
def test_a_misspelt_demo_setting_names_the_closest_one(argv, message, tmp_path, capsys, monkeypatch):
    from vlmdiff.cli import demo as demo_cli

    monkeypatch.setattr(demo_cli.stage, "run", lambda cfg: pytest.fail(f"the demo ran with {cfg}"))
    assert cli_main(demo_cli.main, ["--work_dir", str(tmp_path / "w"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "w").exists()


def test_a_boolean_takes_true_or_false_after_its_flag():
    cli = train_cli.command_line()
    for argv, expected in ((["--use_captions", "false"], False), (["--use_captions", "TRUE"], True),
                           (["--use_captions=false"], False), (["--no_use_captions", "--use_captions"], True),
                           (["--use_captions", "image_size=64"], True)):
        args = cli.parse_args(["--data_path", "d", *argv])
        assert args.use_captions is expected, argv
    assert cli.resolve(cli.parse_args(["--data_path", "d", "--use_captions", "image_size=64"])).image_size == 64


@pytest.mark.parametrize("stage, name", [("train", "init_checkpoint"), ("test", "checkpoint"),
                                         ("finetune-autoencoder", "init_autoencoder")])
def test_each_checkpoint_has_its_name_and_resume_path_stays_its_alias(stage, name, tmp_path, capsys, monkeypatch):
    module, schema = ALL_STAGES[stage]
    entry = help_entries(module, capsys, monkeypatch)[f"--{name}"]
    assert entry.startswith(f"--{name} TEXT, --resume_path TEXT") and "--resume_path: the reference's name" in entry
    assert "resume_path" not in {f.name for f in fields(schema)}
    run = tmp_path / "run.yaml"
    run.write_text("resume_path: from_file.ckpt\n")  # a run config of earlier versions
    cli = module.command_line()
    for argv, expected in ((["--resume_path", "a.ckpt"], "a.ckpt"), ([f"--{name}", "b.ckpt"], "b.ckpt"),
                           (["resume_path=c.ckpt"], "c.ckpt"), ([f"{name}=d.ckpt"], "d.ckpt"),
                           (["--config", str(run)], "from_file.ckpt")):
        assert getattr(cli.resolve(cli.parse_args(["data_path=x", *argv])), name) == expected, argv


def test_predict_counts_an_alias_as_the_setting_it_names(tmp_path):
    from vlmdiff.predict import explicit_settings
    from vlmdiff.run_config import key_aliases

    cli = test_cli.command_line()
    names = [f.name for f in fields(TestConfig)]
    for argv in (["resume_path=a.ckpt"], ["--resume_path", "a.ckpt"], ["checkpoint=a.ckpt"]):
        assert explicit_settings(cli.parse_args(argv), names, key_aliases(TestConfig)) == {"checkpoint"}, argv
