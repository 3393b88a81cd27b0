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
