"""Pretrained weights: one clear error for weights that are not on this machine.

Nothing can be downloaded on the machines this project is built and tested on, so every loader
that fetches real weights turns a failure into ``WeightsNotFoundError``, built by one of two
helpers:

- ``weights_not_found``: a Hugging Face hub id, an OpenCLIP tag, a local folder or file. The
  message says what is missing, the command that downloads it on a machine with internet
  access, and what to pass instead.
- ``checkpoint_not_found`` (and ``require_checkpoint``): a file that torch and torchvision
  look up in torch's hub checkpoint folder (C2's LPIPS and FID backbones). The one-line message
  names the file, where to put it and, when known, its download URL.

Scripts run their body under ``exit_on_missing_weights(options)`` so the user sees that message
and no stack trace; ``options`` names the script's own option for each kind of weights, which the
message's last line then shows (``--pretrained_model=weights/stable-diffusion-2-1``). The loaders
know no option names.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path


class WeightsNotFoundError(RuntimeError):
    """Pretrained weights that could not be found or fetched; the message says how to get them.

    ``weights`` says which weights ("sd2", "source_encoder", "fusion_model", "pipeline",
    "clip_encoder", "open_clip"); with it, the last line says what to pass instead (``local``,
    after ``hint``), and a script that catches the error sets ``option`` to its own option for
    those weights so that the line names it."""

    def __init__(self, message: str, weights: str | None = None, local: str | None = None,
                 hint: str = "pass a local copy"):
        super().__init__(message)
        self.message, self.weights, self.local, self.hint = message, weights, local, hint
        self.option: str | None = None

    def __str__(self) -> str:
        if self.weights is None:
            return self.message
        value = self.local or "PATH"
        return f"{self.message}\n  {self.hint}: {f'--{self.option}={value}' if self.option else value}"


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id: absolute, relative with ./ or ../, ~, or existing."""
    return (
        name.startswith(("/", "./", "../", "~", ".\\"))
        or os.path.isabs(name)
        or os.path.exists(os.path.expanduser(name))
    )


def offline_mode() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def weights_not_found(what: str, name: str, weights: str, *, hub_id: str | None = None,
                      download: str | None = None, local: str | None = None,
                      reason: str | None = None, default_hub_id: str | None = None) -> WeightsNotFoundError:
    """Build the error for missing weights.

    what:     what the weights are for ("CLIP image encoder (transformers)").
    name:     what was asked for (hub id, tag or path).
    weights:  which weights (``WeightsNotFoundError.weights``), for the script's option.
    hub_id:   the hub repository to download, when ``name`` is a missing local path.
    download: a full download command, replacing the default ``hf download`` line.
    local:    what to pass after that download (default: the download folder).
    reason:   the underlying error, shortened to its first line.
    default_hub_id: the project's usual repository, named as well when it is not the one above.
    """
    repo = hub_id or (None if looks_like_path(name) else name)
    if download is None and repo is not None:
        local = local or f"weights/{repo.split('/')[-1]}"
        download = f"hf download {repo} --local-dir {local}"
    lines = [f"{what}: weights not found: {name!r}"]
    if reason:
        first = str(reason).strip().splitlines()[0] if str(reason).strip() else ""
        if first:
            lines.append(f"  cause: {first[:300]}")
    if not os.path.exists(os.path.expanduser(name)):
        if looks_like_path(name):
            lines.append(f"  the path {name} does not exist")
        elif "/" in name:
            lines.append(f"  (nor is there a local folder {name})")
    if offline_mode():
        lines.append("  (HF_HUB_OFFLINE is set: nothing is downloaded)")
    if download:
        lines.append("  get them on a machine with internet access:")
        lines.append(f"    {download}")
    if default_hub_id and default_hub_id != repo:
        lines.append(f"  the project's default is {default_hub_id}: "
                     f"hf download {default_hub_id} --local-dir weights/{default_hub_id.split('/')[-1]}")
    return WeightsNotFoundError("\n".join(lines), weights, local,
                                "then pass the local copy" if download else "pass a local copy")


def read_normalisation(name: str) -> dict:
    """``image_mean`` / ``image_std`` from the ``preprocessor_config.json`` of a local folder or
    of a hub repository already in the local cache; {} when there is none."""
    path = None
    if os.path.isdir(name):
        candidate = os.path.join(name, "preprocessor_config.json")
        path = candidate if os.path.isfile(candidate) else None
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(name, "preprocessor_config.json")
            path = found if isinstance(found, str) else None
        except Exception:  # noqa: BLE001 - optional metadata only
            path = None
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
        return {k: [float(v) for v in data[k]] for k in ("image_mean", "image_std") if k in data}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def hub_checkpoints_dir() -> Path:
    """torch's hub checkpoint folder (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/...``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def checkpoint_not_found(what: str, filename: str, url: str | None = None, hint: str = "") -> WeightsNotFoundError:
    """Build the one-line error for a weight file missing from torch's hub checkpoint folder.

    what:     what the weights are for ("LPIPS AlexNet backbone (torchvision)").
    filename: the file torch looks for (``alexnet-owt-7be5be79.pth``).
    url:      where to download it, when there is such a place.
    hint:     another way to get it, appended in parentheses.
    """
    target = hub_checkpoints_dir() / filename
    get = f"download {url} on a machine with internet access and " if url else ""
    return WeightsNotFoundError(f"{what}: weights file {filename} not found; {get}put it at {target}"
                                + (f" ({hint})" if hint else ""))


def require_checkpoint(filename: str, what: str, url: str | None = None) -> Path:
    """Path of ``filename`` in torch's hub checkpoint folder, or the clear error (nothing is downloaded)."""
    path = hub_checkpoints_dir() / filename
    if not path.is_file():
        raise checkpoint_not_found(what, filename, url)
    return path


@contextmanager
def exit_on_missing_weights(options: dict | None = None):
    """Turn a WeightsNotFoundError into a clean exit (status 1) with its message on stderr;
    ``options`` maps the error's ``weights`` to the script option that takes them."""
    try:
        yield
    except WeightsNotFoundError as e:
        e.option = (options or {}).get(e.weights)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
