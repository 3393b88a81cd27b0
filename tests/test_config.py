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


def test_presets_and_files_in_the_order_given_then_command_line(tmp_path):
    f = tmp_path / "c.py"
    f.write_text('"""a config"""\nbatch_size = 4\nname = "from_file"\n')
    presets = {"tiny": {"batch_size": 2, "lr": 0.1}}
    cfg = configure(header(), presets=presets, argv=["--name=cli", "--preset=tiny", f"--config={f}"], quiet=True)
    assert (cfg["batch_size"], cfg["lr"], cfg["name"], cfg["preset"]) == (4, 0.1, "cli", "tiny")
    first_file = configure(header(), presets=presets, argv=[f"--config={f}", "--preset=tiny"], quiet=True)
    assert (first_file["batch_size"], first_file["name"]) == (2, "from_file")
    cfg = configure(header(), presets=presets, argv=["--name=cli", "--preset=tiny", f"--config={f}"], quiet=True)
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
    assert [c.stem for c in configs] == ["deepfashion_256x176", "deepfashion_512x352", "market1501", "phoenix"]
    datasets = {"deepfashion_256x176": "deepfashion", "deepfashion_512x352": "deepfashion", "market1501": "market",
                "phoenix": "phoenix"}
    for config in configs:
        for script in SCRIPTS:
            cfg, _ = configure_script(script, f"--config={config}")
            assert cfg["dataset"] == datasets[config.stem] and cfg["dataset_root"].startswith("data/"), script
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
    # Market's file names a real base model, batch and source size: tiny after it makes them tiny
    market = f"--config={ROOT / 'configs' / 'market1501.py'}"
    cfg, b2 = configure_script("B2.train_Diffusion_model.py", market, "--preset=tiny")
    b2.take_dataset_values(cfg)
    assert (cfg["dataset"], cfg["pretrained_model"], cfg["batch_size"], cfg["source_size"]) == ("market", "tiny", 4, 64)
    assert (cfg["target_size"], cfg["pose_draw_size"], cfg["flip_prob"]) == ((64, 32), (128, 64), 0.5)
    cfg, _ = configure_script("B2.train_Diffusion_model.py", market)
    assert (cfg["pretrained_model"], cfg["batch_size"]) == ("stabilityai/stable-diffusion-2-1-base", 64)
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


def test_bad_values_are_one_error_listing_each_before_any_work():
    ns = {"batch_size": 48, "target_size": None, "mixed_precision": "auto", "scheduler": "ddpm", "device": "auto",
          "drop_pose": 0.2, "lr": 1e-4}
    with pytest.raises(ConfigError) as e:
        configure(ns, argv=["--batch_size=0", "--target_size=(100,88)", "--mixed_precision=bf17",
                            "--scheduler=euler", "--device=tpu", "--drop_pose=1.5", "--lr=-1"], quiet=True)
    message = str(e.value.code)
    assert "\n" not in message
    for part in ("batch_size=0 must be above 0", "target_size=(100, 88): both sides must be multiples of 8",
                 "mixed_precision='bf17': choose one of", "scheduler='euler': choose one of", "device='tpu'",
                 "drop_pose=1.5 must be between 0 and 1", "lr=-1.0 must be at least 0"):
        assert part in message, (part, message)
    assert ns["batch_size"] == 48  # nothing applied
    cfg = configure(dict(ns), argv=["--device=cuda:1", "--scheduler=DPM++", "--target_size=(256,176)",
                                    "--mixed_precision=bf16"], quiet=True)
    assert cfg["device"] == "cuda:1" and cfg["target_size"] == (256, 176)


def test_value_rules_name_real_options_and_mirror_their_homes():
    """Each rule's name is a header name of some numbered script (a misspelt rule would check
    nothing); every script's defaults, its tiny preset and each shipped config pass the rules; the
    choice lists equal the samplers, dtypes and mixed-precision modes the code accepts."""
    import runpy
    from pathlib import Path

    from src.config import (DTYPE_NAMES, MIXED_PRECISIONS, OPTION_RULES, SCHEDULER_NAMES, SCRIPTS, read_config_file,
                            shared_names, value_problems)
    from src.pipeline import SCHEDULERS
    from src.train.common import resolve_mixed_precision
    from src.util.devices import DTYPES

    assert set(OPTION_RULES) <= shared_names(), set(OPTION_RULES) - shared_names()
    assert set(SCHEDULER_NAMES) == set(SCHEDULERS)
    assert set(DTYPE_NAMES) == {"auto", *DTYPES}
    for mode in MIXED_PRECISIONS:
        resolve_mixed_precision(mode)
    root = Path(__file__).resolve().parents[1]
    configs = [read_config_file(str(f)) for f in sorted((root / "configs").glob("*.py"))]
    for script in SCRIPTS:
        ns = runpy.run_path(str(root / script), run_name="header_only")
        assert not value_problems({k: ns[k] for k in ns if k in OPTION_RULES}), script
        for values in [*ns["PRESETS"].values(), *configs]:
            flat = {k: v for k, v in values.items() if not isinstance(v, dict)}
            assert not value_problems(flat), (script, values)


def test_a_bad_option_is_one_line_without_a_traceback():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "B2.train_Diffusion_model.py", "--mixed_precision=bf17"], cwd=root,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["config error: mixed_precision='bf17': choose one of auto, no, fp32, "
                                             "bf16, fp16"]
