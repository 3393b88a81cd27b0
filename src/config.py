"""Header hyperparameters of the numbered scripts and their overrides.

Each script starts with plain assignments (``batch_size = 48``). Calling
``configure(globals(), presets=PRESETS)`` right below them collects those names and applies,
in this order (a later value wins):

1. ``--preset=NAME``      a named set of overrides from the script's ``PRESETS`` dict (``tiny``:
                          small models and short runs for a CPU),
2. ``--config=FILE.py``   a file of plain assignments (may be given more than once),
3. ``--name=value``       single values, parsed as Python literals (``--lr=1e-4``,
                          ``--target_size=(256,176)``); a bare word is taken as a string.

Every value is checked against the type of its default; unknown names are errors that list
the valid ones. ``None`` defaults accept anything. Sizes are written as ``(height, width)``
tuples. The effective config is returned as a dict (and written back into the script's
globals), printed, and saved as JSON with ``save_config``.

Config files are shared by the five scripts: ``configs/`` holds one per paper setting (the
dataset, its root and what the setting changes), and the same file is passed to A1, B1, B2, C1
and C2. A name in a config file that this script lacks but another numbered script has is
skipped (and listed); a name no numbered script has is an error, so a typo is still caught.

Presets and config files compose without extra flags, by two rules. A dataset's sizes are its
``DatasetSpec``'s (``src.data``), which a script takes for every size it leaves at ``None``; and
a preset may give a value per dataset, a dict keyed by dataset name (``{"deepfashion": (128, 88),
"phoenix": (80, 64)}``), of which the value for the run's final ``dataset`` is used. So
``--preset=tiny --config=configs/phoenix.py`` is tiny's models and schedule at tiny's PHOENIX
sizes: that file sets no size. A config file named by a size (``deepfashion_256x176``,
``deepfashion_512x352``) sets its sizes (``None``: the dataset's), which win over tiny's: with
``--preset=tiny`` it is a run of tiny models at that size.
"""

from __future__ import annotations

import ast
import functools
import json
import sys
from pathlib import Path

CONFIG_TYPES = (bool, int, float, str, list, tuple, dict, type(None))


class ConfigError(SystemExit):
    """A bad override: exits with its one-line message."""

    def __init__(self, message: str):
        super().__init__(f"config error: {message}")


def as_config_error(function, *args, **kwargs):
    """``function(*args, **kwargs)``, its ValueError (a library's word on a bad value, e.g. an
    unknown dataset name) becoming a ConfigError: the script's one-line exit."""
    try:
        return function(*args, **kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None


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


# What a name means is the same in every script, so its valid values are declared once here and
# checked before a script does any work. The choice lists repeat names whose home imports torch
# or diffusers (the samplers of src.pipeline, the dtypes of src.util.devices), so that a bad value
# answers at once; a test keeps them equal.
SCHEDULER_NAMES = ("ddpm", "ddim", "dpm++", "unipc")
DTYPE_NAMES = ("auto", "fp32", "bf16", "fp16", "float32", "bfloat16", "float16")
MIXED_PRECISIONS = ("auto", "no", "fp32", "bf16", "fp16")
# C1's cross-frame attention (src.models.cross_frame_attention, which reads them here): each
# frame's anchor is the video's first frame or the one before it.
CROSS_FRAME_ANCHORS = ("off", "first", "previous")


def _choice(*choices):
    return lambda v: None if str(v).lower() in choices else f"choose one of {', '.join(choices)}"


def _above(low, inclusive=False):
    def check(v):
        ok = v is None or (v >= low if inclusive else v > low)
        return None if ok else f"must be {'at least' if inclusive else 'above'} {low}"
    return check


def _fraction(v):
    return None if v is None or 0 <= v <= 1 else "must be between 0 and 1"


def _size(multiple=1):
    def check(v):
        if v is None:
            return None
        if len(v) != 2 or not all(isinstance(x, int) and x > 0 for x in v):
            return "must be (height, width), two positive integers"
        if multiple > 1 and any(x % multiple for x in v):
            return f"both sides must be multiples of {multiple} (the VAE's downsampling)"
        return None
    return check


def _device(v):
    v = str(v)
    head, _, index = v.partition(":")
    ok = v in ("auto", "cpu", "mps", "meta") or (head == "cuda" and (not index or index.isdigit()))
    return None if ok else "choose auto, cpu, cuda, cuda:N, mps or meta (shapes only: the FLOP count)"


OPTION_RULES = {
    **dict.fromkeys(("batch_size", "epochs", "gradient_accumulation_steps", "num_inference_steps",
                     "validation_inference_steps", "checkpointing_steps", "checkpoints_total_limit",
                     "log_every", "val_every_epochs", "validation_loss_pairs", "workers",
                     "image_size", "source_size", "fusion_size", "projection_dim", "hidden_dim",
                     "mlp_hidden_dim", "temperature", "fps", "adam_epsilon"), _above(0)),
    # validation_pairs 0: no validation grid (B2 skips it); lr 0: the weights stay (tests of what trains)
    **dict.fromkeys(("num_workers", "num_grids", "validation_steps", "validation_pairs", "lr", "max_grad_norm",
                     "weight_decay",
                     "noise_offset", "l1_weight", "guidance_scale", "validation_guidance_scale",
                     "jitter_sigma", "jpeg_quality"), _above(0, inclusive=True)),
    **dict.fromkeys(("identity_prob", "flip_prob", "drop_pose", "drop_source", "drop_fusion", "dropout",
                     "mlp_dropout", "ema_decay"), _fraction),
    **dict.fromkeys(("target_size", "size"), _size(8)),
    **dict.fromkeys(("eval_size", "pose_draw_size"), _size()),
    "mixed_precision": _choice(*MIXED_PRECISIONS),
    "scheduler": _choice(*SCHEDULER_NAMES),
    "validation_scheduler": _choice(*SCHEDULER_NAMES),
    "dtype": _choice(*DTYPE_NAMES),
    "cross_frame_attention": _choice(*CROSS_FRAME_ANCHORS),
    "device": _device,
}


def value_problems(config: dict) -> list[str]:
    """``name=value: why`` for every value of ``config`` that ``OPTION_RULES`` refuses."""
    problems = []
    for name, value in config.items():
        rule = OPTION_RULES.get(name)
        why = rule(value) if rule else None
        if why:
            problems.append(f"{name}={value!r} {why}" if why.startswith("must") else f"{name}={value!r}: {why}")
    return problems


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


# The numbered scripts, whose header names a shared config file may set.
SCRIPTS = ("A1.pose_data_preprocessing.py", "B1.train_Fusion_model.py", "B2.train_Diffusion_model.py",
           "C1.test_Diffusion_model.py", "C2.eval.caculate_metrics.py")
ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def script_names(script: str) -> frozenset[str]:
    """The header names of a numbered script, read from its source without running it: the
    module-level assignments above its ``PRESETS``."""
    path = ROOT / script
    names = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == "PRESETS":
                break
            if not name.startswith("_") and not name.isupper():
                names.add(name)
    return frozenset(names)


def shared_names() -> frozenset[str]:
    """Every name some numbered script has: what a shared config file may set."""
    return frozenset().union(*(script_names(s) for s in SCRIPTS))


def _is_per_dataset(value, default) -> bool:
    return isinstance(value, dict) and not isinstance(default, dict)


def _final_dataset(defaults: dict, updates: list[tuple[str, object, str]]):
    """The ``dataset`` the run ends with, after every override."""
    dataset = defaults.get("dataset")
    for key, value, _ in updates:
        if key == "dataset":
            dataset = value
    return dataset


def configure(namespace: dict, presets: dict | None = None, argv: list[str] | None = None,
              quiet: bool = False) -> dict:
    """Apply presets and config files (in the order given) and then ``--name=value`` overrides to the
    header names in ``namespace``."""
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

    # presets and config files apply in the order given, the later winning, as repeated options
    # do on most command lines: `--config=configs/market1501.py --preset=tiny` runs tiny models on
    # Market, `--preset=tiny --config=configs/deepfashion_256x176.py` tiny models at 256x176
    preset_names, sources, singles = [], [], []
    for a in argv:
        if not a.startswith("--") or "=" not in a:
            raise ConfigError(f"argument {a!r} is not of the form --name=value")
        key, text = a[2:].split("=", 1)
        if key == "preset":
            if text not in presets:
                raise ConfigError(f"unknown preset {text!r}; presets: {', '.join(presets) or 'none'}")
            preset_names.append(text)
            sources.append(("preset", text))
        elif key == "config":
            sources.append(("config", text))
        else:
            singles.append((key, text))

    updates: list[tuple[str, object, str]] = []
    skipped: dict[str, list[str]] = {}
    for kind, name in sources:
        if kind == "preset":
            updates += [(k, v, f"preset {name}") for k, v in presets[name].items()]
            continue
        for k, v in read_config_file(name).items():
            if k in defaults or k not in shared_names():
                updates.append((k, v, name))
            else:
                skipped.setdefault(name, []).append(k)
    updates += [(k, _parse_value(t), "command line") for k, t in singles]

    config = dict(defaults)
    dataset = _final_dataset(defaults, updates)
    for key, value, source in updates:
        if key not in defaults:
            raise ConfigError(f"{source}: unknown name {key!r}; valid names: {', '.join(names)}")
        if source.startswith("preset ") and _is_per_dataset(value, defaults[key]):
            if dataset not in value:
                raise ConfigError(f"{source}: {key} has no value for dataset={dataset!r} "
                                  f"(it has {', '.join(map(repr, value))})")
            value = value[dataset]
        config[key] = check_type(key, value, defaults[key], source)
    if problems := value_problems(config):
        raise ConfigError("; ".join(problems))
    namespace.update(config)
    config["preset"] = ",".join(preset_names) or None
    if not quiet:
        print(format_config(config))
        for f, keys in skipped.items():
            print(f"{f}: for the other scripts, not used here: {', '.join(keys)}")
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
