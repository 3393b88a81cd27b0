import json

import pytest

from src.config import ConfigError, configure, save_config


def header():
    return {"batch_size": 48, "lr": 1e-5, "name": "run", "use_ema": False, "sizes": (512, 352),
            "fusion_model": None, "PRESETS": {"tiny": {}}}


def test_overrides_are_parsed_and_typed():
    ns = header()
    cfg = configure(ns, argv=["--batch_size=8", "--lr=3", "--name=abc", "--use_ema=True",
                              "--sizes=[256,176]", "--fusion_model=/x/y"], quiet=True)
    assert ns["batch_size"] == 8 and cfg["lr"] == 3.0 and isinstance(cfg["lr"], float)
    assert ns["name"] == "abc" and ns["use_ema"] is True and ns["sizes"] == (256, 176)
    assert ns["fusion_model"] == "/x/y"
    assert "PRESETS" not in cfg


@pytest.mark.parametrize("arg, message", [
    ("--batch_sise=8", "unknown name 'batch_sise'; valid names: batch_size, lr"),
    ("--batch_size=8.5", "batch_size=8.5 is float, expected int"),
    ("--use_ema=1", "use_ema=1 is int, expected bool"),
    ("--lr=fast", "lr='fast' is str, expected float"),
    ("batch_size=8", "not of the form --name=value"),
    ("--preset=huge", "unknown preset 'huge'; presets: tiny"),
])
def test_bad_overrides_are_errors(arg, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        configure(header(), presets={"tiny": {"batch_size": 2}}, argv=[arg], quiet=True)


def test_preset_then_file_then_command_line(tmp_path):
    f = tmp_path / "c.py"
    f.write_text('"""a config"""\nbatch_size = 4\nname = "from_file"\n')
    ns = header()
    cfg = configure(ns, presets={"tiny": {"batch_size": 2, "lr": 0.1}},
                    argv=["--name=cli", f"--config={f}", "--preset=tiny"], quiet=True)
    assert (cfg["batch_size"], cfg["lr"], cfg["name"], cfg["preset"]) == (4, 0.1, "cli", "tiny")
    out = save_config(cfg, tmp_path / "run")
    assert json.loads(out.read_text())["batch_size"] == 4


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    with pytest.raises(ConfigError, match="bad.py:1: only 'name = value'"):
        configure(header(), argv=[f"--config={bad}"], quiet=True)
    with pytest.raises(ConfigError, match="nope.py: config file not found"):
        configure(header(), argv=["--config=nope.py"], quiet=True)
    typo = tmp_path / "typo.py"
    typo.write_text("bach_size = 3\n")
    with pytest.raises(ConfigError, match="typo.py: unknown name 'bach_size'"):
        configure(header(), argv=[f"--config={typo}"], quiet=True)


# ---------------------------------------------------------------------------------------------
# the five scripts and the shared config files


def load_script(script: str):
    """A numbered script as a fresh module: its header and PRESETS (it imports nothing heavy before main)."""
    import importlib.util

    from src.config import ROOT

    spec = importlib.util.spec_from_file_location(f"script_{script.split('.')[0]}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def configure_script(script: str, *argv: str) -> tuple[dict, object]:
    module = load_script(script)
    return configure(vars(module), presets=module.PRESETS, argv=list(argv), quiet=True), module


def test_every_script_takes_dataset_and_only_the_tiny_preset():
    from src.config import SCRIPTS, script_names

    for script in SCRIPTS:
        module = load_script(script)
        assert "dataset" in script_names(script) and module.dataset == "deepfashion", script
        assert list(module.PRESETS) == ["tiny"], script
        assert configure_script(script, "--dataset=phoenix")[0]["dataset"] == "phoenix"


def test_a_shared_config_file_works_for_all_five_scripts_and_a_typo_is_an_error(tmp_path, capsys):
    from src.config import ROOT, SCRIPTS

    configs = sorted((ROOT / "configs").glob("*.py"))
    assert [c.stem for c in configs] == ["deepfashion_256x176", "deepfashion_512x352", "phoenix"]
    for config in configs:
        for script in SCRIPTS:
            cfg, _ = configure_script(script, f"--config={config}")
            assert cfg["dataset"] == config.stem.split("_")[0] and cfg["dataset_root"].startswith("data/"), script
    # each script takes the names it has and lists the others'
    module = load_script("A1.pose_data_preprocessing.py")
    configure(vars(module), presets=module.PRESETS, argv=[f"--config={ROOT / 'configs' / 'phoenix.py'}"])
    assert "phoenix.py: for the other scripts, not used here: eval_sizes, fid_reference" in capsys.readouterr().out
    assert configure_script("C2.eval.caculate_metrics.py", f"--config={ROOT / 'configs' / 'phoenix.py'}")[0][
        "eval_sizes"] == "dataset"
    # a name none of the five scripts has is a typo, in every script
    typo = tmp_path / "typo.py"
    typo.write_text('dataset = "phoenix"\neval_size = (260, 210)\ntarget_sise = (80, 64)\n')
    for script in SCRIPTS:
        with pytest.raises(ConfigError, match="typo.py: unknown name 'target_sise'"):
            configure_script(script, f"--config={typo}")
    # and on the command line, a name of another script is still this one's error
    with pytest.raises(ConfigError, match="command line: unknown name 'eval_sizes'"):
        configure_script("B2.train_Diffusion_model.py", "--eval_sizes=[(260, 210)]")


def test_tiny_composes_with_a_dataset_config_without_extra_flags():
    from src.config import ROOT

    phoenix = f"--config={ROOT / 'configs' / 'phoenix.py'}"
    cfg, b2 = configure_script("B2.train_Diffusion_model.py", "--preset=tiny", phoenix)
    b2.take_dataset_values(cfg)
    assert (cfg["dataset"], cfg["pretrained_model"], cfg["source_size"]) == ("phoenix", "tiny", 64)
    assert cfg["target_size"] == (80, 64) and cfg["pose_draw_size"] == (260, 210)  # PHOENIX's aspect and canvas
    assert (cfg["flip_prob"], cfg["jitter_sigma"]) == (0.0, 0.5)
    assert (b2.target_size, b2.flip_prob) == ((80, 64), 0.0)
    # the same preset on DeepFashion, and the dataset's own sizes without it
    cfg, b2 = configure_script("B2.train_Diffusion_model.py", "--preset=tiny")
    b2.take_dataset_values(cfg)
    assert (cfg["target_size"], cfg["pose_draw_size"], cfg["flip_prob"]) == ((128, 88), (256, 176), 0.5)
    cfg, b2 = configure_script("B2.train_Diffusion_model.py", phoenix)
    b2.take_dataset_values(cfg)
    assert (cfg["target_size"], cfg["pose_draw_size"], cfg["jitter_sigma"]) == ((320, 256), (260, 210), 0.5)
    # a value set on the command line wins
    cfg, b2 = configure_script("B2.train_Diffusion_model.py", "--preset=tiny", phoenix, "--target_size=(64, 48)")
    assert cfg["target_size"] == (64, 48)
    cfg, _ = configure_script("C2.eval.caculate_metrics.py", "--preset=tiny", phoenix)
    assert (cfg["eval_sizes"], cfg["fid_backbone"], cfg["temporal"]) == ("dataset", "pytorch-fid", "on")


def test_a_preset_value_per_dataset_needs_the_runs_dataset():
    ns = {"dataset": "deepfashion", "size": (512, 352), "PRESETS": {}}
    presets = {"tiny": {"size": {"deepfashion": (128, 88), "phoenix": (80, 64)}}}
    assert configure(dict(ns), presets, argv=["--preset=tiny"], quiet=True)["size"] == (128, 88)
    assert configure(dict(ns), presets, argv=["--preset=tiny", "--dataset=phoenix"], quiet=True)["size"] == (80, 64)
    with pytest.raises(ConfigError, match="preset tiny: size has no value for dataset='other'"):
        configure(dict(ns), presets, argv=["--preset=tiny", "--dataset=other"], quiet=True)
