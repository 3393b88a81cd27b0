"""DINOv2's position grid at 512 px: transformers 4.40's scale-factor rule (what the released FPDM
weights learned with; SourceEncoder position_grid="scale_factor") against the installed
transformers' target-size rule ("size"), and our "scale_factor" encoder checked against 4.40.1 itself.

    python bench/dinov2_position_grid.py                       # both parts (2-core CPU: ~11 minutes)
    python bench/dinov2_position_grid.py --reference_python=   # part 1 only
    python bench/dinov2_position_grid.py --check_full=False    # 4.40.1 comparison on the tiny networks only

1. How far apart the two rules are: DINOv2-large (src/models/configs/dinov2_large.json, random
   weights from ``seed``) fed ``num_photos`` DeepFashion photos from ``photos`` (read in place),
   squashed to 512x512: a 37x37 learned grid resampled to 36x36. Max and mean |scale_factor - size|
   over the 1297 tokens, relative to the std of the tokens; the same for the resampled position
   embeddings alone. Random position embeddings are white noise, rougher than learned ones, so
   these figures show the size of the effect, not the figure for the real weights.
2. Against the real transformers 4.40.1, run by ``reference_python`` in its own environment:
       python3.11 -m venv /tmp/tf440env
       /tmp/tf440env/bin/pip install torch==2.14.1 transformers==4.40.1 safetensors
   Each network's weights go over as safetensors (attention keys renamed to 4.40's names, loaded
   strictly) with its config and the already-normalised pixels; 4.40.1's Dinov2Model returns its
   last_hidden_state, compared with our SourceEncoder under both rules. Cases: tiny (4x4 learned
   grid, 48 px input: 6x6), tiny with a matching grid (32 px: nothing resampled), and, with
   ``check_full``, DINOv2-large at 512 px on the photos.
Prints the figures and writes ``out`` (JSON).
"""
# ---- hyperparameters: edit here, or override with --name=value / --config=file.py
photos = "../shared/data/deepfashion_samples/img"   # relative to the repository root; **/*.jpg
num_photos = 4                               # spread over the sorted photo list
image_size = 512                             # the source size (36x36 patches at patch 14)
seed = 0                                     # random weights of every network
reference_python = "/tmp/tf440env/bin/python"  # a Python with transformers 4.40.1; "" skips part 2
check_full = True                            # part 2 on DINOv2-large too (the longest step)
out = "logs/bench_position_grid/position_grid.json"
# -----------------------------------------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.config import configure  # noqa: E402

# transformers 5 renamed DINOv2's attention projections; 4.40 loads its own names.
TO_4_40 = {".attention.q_proj.": ".attention.attention.query.", ".attention.k_proj.": ".attention.attention.key.",
           ".attention.v_proj.": ".attention.attention.value.", ".attention.o_proj.": ".attention.output.dense."}

# Run by reference_python in a temporary folder: config.json, weights.safetensors, pixels.safetensors
# -> tokens.safetensors, and a JSON line on stdout.
REFERENCE = r'''
import inspect, json, sys
import torch, transformers
from safetensors.torch import load_file, save_file
from transformers import Dinov2Config, Dinov2Model

folder = sys.argv[1]
given = json.load(open(folder + "/config.json"))
known = set(inspect.signature(Dinov2Config.__init__).parameters) - {"self", "kwargs"}
config = Dinov2Config(**{k: v for k, v in given.items() if k in known})
model = Dinov2Model(config).eval()
model.load_state_dict(load_file(folder + "/weights.safetensors"), strict=True)
with torch.no_grad():
    tokens = model(pixel_values=load_file(folder + "/pixels.safetensors")["pixels"]).last_hidden_state
save_file({"tokens": tokens.contiguous()}, folder + "/tokens.safetensors")
print(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                  "module": inspect.getsourcefile(Dinov2Model),
                  "config_keys_not_in_4_40": sorted(set(given) - known)}))
'''


def load_photos(n: int, size: int):
    import torch

    from src.util.images import load_rgb, to_tensor

    root = (ROOT / photos).resolve()
    paths = sorted(root.glob("**/*.jpg"))
    if not paths:
        raise SystemExit(f"no photos under {root}")
    chosen = paths[:: max(1, len(paths) // n)][:n]
    images = [to_tensor(load_rgb(p).resize((size, size), 3)) for p in chosen]  # 3: PIL's bicubic
    return torch.stack(images), [str(p.relative_to(root)) for p in chosen]


def differences(a, b, reference) -> dict:
    d = (a - b).abs()
    std = reference.std().item()
    return {"max_abs": d.max().item(), "mean_abs": d.mean().item(), "reference_std": std,
            "max_rel_std": d.max().item() / std, "mean_rel_std": d.mean().item() / std}


def full_encoder(position_grid: str):
    import torch

    from src.models.source_encoder import SourceEncoder

    config = json.loads((ROOT / "src/models/configs/dinov2_large.json").read_text())
    torch.manual_seed(seed)
    return SourceEncoder(backend="dinov2", model_config=config, image_size=image_size, position_grid=position_grid)


def rule_difference(encoder, images) -> dict:
    """Part 1: the tokens and the position embeddings under both rules, the same weights."""
    import torch

    from src.models.source_encoder import scale_factor_position_grid

    encoder.register_to_config(position_grid="scale_factor")
    old = encoder(images)
    encoder.register_to_config(position_grid="size")
    new = encoder(images)
    encoder.register_to_config(position_grid="scale_factor")
    emb = encoder.model.embeddings
    n = image_size // encoder.model.config.patch_size
    with torch.no_grad():
        pos_old = scale_factor_position_grid(emb.position_embeddings, (n, n))
        pos_new = type(emb).interpolate_pos_encoding(emb, torch.zeros(1, 1 + n * n, encoder.width), image_size,
                                                    image_size)
    per_photo = [differences(old[i], new[i], old[i]) for i in range(len(images))]
    return {"tokens": list(old.shape[1:]), "all_photos": differences(old, new, old), "per_photo": per_photo,
            "position_embeddings": differences(pos_old[:, 1:], pos_new[:, 1:], emb.position_embeddings[:, 1:])}


def reference_tokens(encoder, pixels, folder: Path):
    """4.40.1's last_hidden_state of the same weights and pixels."""
    from safetensors.torch import load_file, save_file

    state = {}
    for k, v in encoder.model.state_dict().items():
        for new, old in TO_4_40.items():
            k = k.replace(new, old)
        state[k] = v.contiguous()
    save_file(state, folder / "weights.safetensors")
    save_file({"pixels": pixels.contiguous()}, folder / "pixels.safetensors")
    config = {k: v for k, v in encoder.model.config.to_dict().items() if not k.startswith("_")}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "reference.py").write_text(REFERENCE)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    run = subprocess.run([reference_python, "-I", str(folder / "reference.py"), str(folder)], env=env,
                         cwd=folder, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{reference_python} failed:\n{run.stderr[-3000:]}")
    info = json.loads(run.stdout.strip().splitlines()[-1])
    return load_file(folder / "tokens.safetensors")["tokens"], info


def against_4_40(name: str, make, images) -> dict:
    """Part 2 for one network: 4.40.1 against our encoder under both rules."""
    import torch

    old, new = make("scale_factor"), make("size")
    new.load_state_dict(old.state_dict())
    pixels = old.preprocess(images)
    with tempfile.TemporaryDirectory(prefix="position_grid_") as tmp:
        ref, info = reference_tokens(old, pixels, Path(tmp))
    ours, theirs = old(images), new(images)
    result = {"network": name, "grid": f"{old.model.config.image_size // old.model.config.patch_size} learned, "
              f"{old.config.image_size // old.model.config.patch_size} fed", "reference": info,
              "scale_factor_vs_4_40": differences(ours, ref, ref), "size_vs_4_40": differences(theirs, ref, ref)}
    result["scale_factor_equals_4_40"] = bool(torch.allclose(ours, ref, atol=1e-4 * ref.std().item(), rtol=0))
    return result


def main() -> dict:
    import torch

    from src.util.fileio import atomic_write_json
    from src.models.source_encoder import SourceEncoder

    start = time.time()
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
              "torch": torch.__version__, "config": dict(cfg)}
    import transformers

    report["transformers"] = transformers.__version__
    images, names = load_photos(num_photos, image_size)
    report["photos"] = names
    print(f"photos ({len(names)}, squashed to {image_size}x{image_size}): {', '.join(names)}")

    full = full_encoder("scale_factor")
    report["rules_at_512"] = rule_difference(full, images)
    r = report["rules_at_512"]
    print(f"\n1. scale_factor vs size, DINOv2-large (random weights, seed {seed}), {r['tokens'][0]} tokens "
          f"x {r['tokens'][1]}, {len(names)} photos ({time.time() - start:.0f}s)")
    for label, d in [("all photos", r["all_photos"])] + [(n, d) for n, d in zip(names, r["per_photo"])] + [
            ("position embeddings", r["position_embeddings"])]:
        print(f"   {label:<48} max {d['max_abs']:.4g} ({d['max_rel_std']:.3g} std)  "
              f"mean {d['mean_abs']:.4g} ({d['mean_rel_std']:.3g} std)  std {d['reference_std']:.4g}")
    del full

    if reference_python:
        torch.manual_seed(seed)
        small = torch.rand(2, 3, 40, 56) * 2 - 1

        def tiny(fed, learned=32):
            def make(grid):
                torch.manual_seed(seed)
                return SourceEncoder.tiny(image_size=fed, model_image_size=learned, position_grid=grid)
            return make

        cases = [("tiny", tiny(48), small), ("tiny, matching grid", tiny(32), small)]
        if check_full:
            cases.append(("DINOv2-large", full_encoder, images))
        report["against_4_40"] = []
        print(f"\n2. against transformers 4.40.1 ({reference_python}): last_hidden_state differences")
        for name, make, x in cases:
            res = against_4_40(name, make, x)
            report["against_4_40"].append(res)
            a, b = res["scale_factor_vs_4_40"], res["size_vs_4_40"]
            print(f"   {name:<22} ({res['grid']}): scale_factor max {a['max_abs']:.3g} mean {a['mean_abs']:.3g}"
                  f" | size max {b['max_abs']:.3g} mean {b['mean_abs']:.3g}"
                  f" | scale_factor == 4.40: {res['scale_factor_equals_4_40']}  ({time.time() - start:.0f}s)")
        print(f"   reference: transformers {res['reference']['transformers']}, torch {res['reference']['torch']}")
    report["seconds"] = time.time() - start
    path = atomic_write_json(ROOT / out, report)
    print(f"\n{report['machine']}; {path} ({report['seconds']:.0f}s)")
    return report


if __name__ == "__main__":
    cfg = configure(globals())
    main()
