"""Header hyperparameters of the numbered scripts and their overrides.

Each script starts with plain assignments (``batch_size = 48``). Calling
``configure(globals(), presets=PRESETS)`` right below them collects those names and applies,
in this order:

1. ``--preset=NAME``      a named set of overrides from the script's ``PRESETS`` dict,
2. ``--config=FILE.py``   a file of plain assignments (may be given more than once),
3. ``--name=value``       single values, parsed as Python literals (``--lr=1e-4``,
                          ``--sizes=(256,176)``); a bare word is taken as a string.

Every value is checked against the type of its default; unknown names are errors that list
the valid ones. ``None`` defaults accept anything. The effective config is returned as a dict
(and written back into the script's globals), printed, and saved as JSON with ``save_config``.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

CONFIG_TYPES = (bool, int, float, str, list, tuple, dict, type(None))


class ConfigError(SystemExit):
    """A bad override: exits with its one-line message."""

    def __init__(self, message: str):
        super().__init__(f"config error: {message}")


def header_names(namespace: dict) -> list[str]:
    """Names of the plain hyperparameters defined so far in a script's namespace."""
    return [
        k for k, v in namespace.items()
        if not k.startswith("_") and k.isidentifier() and not k.isupper() and isinstance(v, CONFIG_TYPES)
    ]


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_type(name: str, value, default, source: str):
    """Return ``value`` converted to the default's type, or raise ConfigError."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return type(default)(value)
    elif isinstance(value, type(default)):
        return value
    raise ConfigError(
        f"{source}: {name}={value!r} is {type(value).__name__}, expected {type(default).__name__} "
        f"(default {default!r})"
    )


def read_config_file(path: str) -> dict:
    """Assignments of a config file (``name = value`` lines, Python literals only)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        tree = ast.parse(p.read_text(), filename=str(p))
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid Python ({e.msg})") from None
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ConfigError(f"{path}:{node.lineno}: only 'name = value' assignments are allowed")
        try:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ConfigError(f"{path}:{node.lineno}: value of {node.targets[0].id} is not a literal") from None
    return values


def configure(namespace: dict, presets: dict | None = None, argv: list[str] | None = None,
              quiet: bool = False) -> dict:
    """Apply preset, config files and ``--name=value`` overrides to the header names in ``namespace``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    presets = presets or {}
    names = header_names(namespace)
    defaults = {k: namespace[k] for k in names}

    if any(a in ("-h", "--help") for a in argv):
        print("hyperparameters (override with --name=value, --config=file.py, "
              f"--preset={{{','.join(presets) or ''}}}):")
        for k, v in defaults.items():
            print(f"  --{k}={v!r}")
        raise SystemExit(0)

    preset_names, files, singles = [], [], []
    for a in argv:
        if not a.startswith("--") or "=" not in a:
            raise ConfigError(f"argument {a!r} is not of the form --name=value")
        key, text = a[2:].split("=", 1)
        if key == "preset":
            preset_names.append(text)
        elif key == "config":
            files.append(text)
        else:
            singles.append((key, text))

    updates: list[tuple[str, object, str]] = []
    for p in preset_names:
        if p not in presets:
            raise ConfigError(f"unknown preset {p!r}; presets: {', '.join(presets) or 'none'}")
        updates += [(k, v, f"preset {p}") for k, v in presets[p].items()]
    for f in files:
        updates += [(k, v, f) for k, v in read_config_file(f).items()]
    updates += [(k, _parse_value(t), "command line") for k, t in singles]

    config = dict(defaults)
    for key, value, source in updates:
        if key not in defaults:
            raise ConfigError(f"{source}: unknown name {key!r}; valid names: {', '.join(names)}")
        config[key] = check_type(key, value, defaults[key], source)
    namespace.update(config)
    config["preset"] = ",".join(preset_names) or None
    if not quiet:
        print(format_config(config))
    return config


def format_config(config: dict) -> str:
    width = max(len(k) for k in config) if config else 0
    return "config:\n" + "\n".join(f"  {k:<{width}} = {v!r}" for k, v in config.items())


def changed_values(saved: dict, current: dict, may_change=()) -> dict:
    """{name: (saved value, current value)} of the names whose values differ between a saved config
    (or record) and the current one, compared as JSON (tuples and lists alike), except ``may_change``."""
    now = json.loads(json.dumps(current, default=str))
    return {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now))
            if k not in may_change and saved.get(k) != now.get(k)}


def save_config(config: dict, out_dir: str | Path, name: str = "config.json") -> Path:
    from .util.fileio import atomic_write_text

    path = Path(out_dir) / name
    atomic_write_text(path, json.dumps(config, indent=2, default=str) + "\n")
    return path
