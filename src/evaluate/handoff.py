"""The C1 -> C2 hand-off: where C1 writes its images and how C2 finds them again.

C1 writes, under its output folder OUT::

    OUT/<H>x<W>/<source>_2_<target>.png     at the model size, and at the evaluation size
    OUT/manifest.json                       one entry per pair, in pair-file order:
        {"generated": "<H>x<W>/<name>.png",           the model-size image
         "generated_<h>x<w>": "<h>x<w>/<name>.png",   the evaluation-size image
         "source_image": "./img/...", "target_image": "./img/...",
         "consistency": {"shared_noise": false, "cross_frame_attention": "off"}}   C1's video options

with the FPDM authors' C1 names: <source> and <target> are the pair's image paths after ``./img``
with every ``/`` removed, extension kept (``authors_name``, ``output_name``). When the evaluation
size is the model size, both keys name the same file.

C2 reads that manifest (``naming="manifest"``) or, in a folder without one (``naming="names"``),
finds the image of every test pair by its file name: the authors' C1 name, as C1 writes it, or
PIDM's test script's (``pidm_name``), to score others' outputs. ``generated_entries`` does
either and checks every generated image and its ground truth; sizes are written ``HxW``
(``parse_size``, ``size_name``). Without sizes asked for, C2 scores the sizes every generated
image comes in (``held_sizes``: C1's model size and evaluation size), and ``image_sources`` says
for each scored size whether its images are the generated ones or resizes of another size's (by
C1 from the model's output, or by C2 itself).

Videos (PHOENIX-2014T's protocol: the first frame of each test video is the source of every frame
of it): ``group_videos`` makes one ``EvalVideo`` of the pairs that share a source image, named
after the targets' folder below ``img`` (``<split>/<video>``), its frames ordered by the number
ending each target's file stem (``images0001.png`` -> 1); ``resolve_temporal`` decides from C2's
``temporal`` setting whether videos are scored, and ``video_problems`` lists every video whose
frames are not all among the evaluated pairs.

C1's video consistency options (``CONSISTENCY_DEFAULTS``: frame-by-frame generation, the paper's
protocol) are recorded in every manifest entry; ``consistency_used`` tells C2's report which
were used (``consistency_text`` in words).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from ..data import ProblemsError, read_pair_file
from ..util.fileio import atomic_write_json

NAMINGS = ("auto", "manifest", "names")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TEMPORAL_MODES = ("auto", "on", "off")
_FRAME_NUMBER = re.compile(r"(\d+)$")   # the digits ending a file stem: images0042 -> 42


class ManifestError(ProblemsError):
    """Every problem found in C2's inputs (generated images, ground truth, FID reference, options)."""

    def __init__(self, problems: list[str], what: str = "C2 input check"):
        super().__init__(problems, what)


# ---------------------------------------------------------------------------------------------
# sizes


def parse_size(text) -> tuple[int, int]:
    """'256x176' or (256, 176) -> (256, 176): height x width (evaluation sizes, and any other size
    given as text)."""
    try:
        parts = text if isinstance(text, (tuple, list)) else str(text).lower().split("x")
        h, w = (int(v) for v in parts)
    except (TypeError, ValueError):
        raise ValueError(f"size {text!r} is neither (height, width) nor HEIGHTxWIDTH (e.g. (256, 176))") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"size {text!r}: height and width must be positive")
    return h, w


def size_name(size: tuple[int, int]) -> str:
    """(256, 176) -> '256x176': height x width, the name of C1's folder and of a C2 result block."""
    return f"{size[0]}x{size[1]}"


# ---------------------------------------------------------------------------------------------
# file names


def _img_parts(image_rel: str) -> tuple[str, ...]:
    """Components of a pair-file path after its leading ``./img`` ('./img/MEN/x/01_1_front.jpg'
    -> ('MEN', 'x', '01_1_front.jpg'))."""
    parts = PurePosixPath(image_rel).parts
    parts = parts[1:] if parts and parts[0] == "." else parts
    if not parts or parts[0] != "img":
        raise ValueError(f"{image_rel}: image paths in pair files start with ./img/")
    return parts[1:]


def authors_name(image_rel: str) -> str:
    """The FPDM authors' C1 name of an image path: the path after ``./img`` with every ``/``
    removed, extension kept ('./img/MEN/Tees_Tanks/id_00007301/04_7_additional.jpg' ->
    'MENTees_Tanksid_0000730104_7_additional.jpg')."""
    return "".join(_img_parts(image_rel))


def output_name(pair: dict) -> str:
    """C1's file name of a (source, target) pair, the FPDM authors' C1's: '<source>_2_<target>.png'
    with ``authors_name``."""
    return f"{authors_name(pair['source_image'])}_2_{authors_name(pair['target_image'])}.png"


def check_output_names(pairs: list[dict]) -> None:
    """Raise ValueError when two different pairs get one ``output_name`` (removing the ``/`` of two
    paths can make them equal): one image would overwrite the other."""
    seen: dict[str, tuple] = {}
    for p in pairs:
        key = (p["source_image"], p["target_image"])
        other = seen.setdefault(output_name(p), key)
        if other != key:
            raise ValueError(f"pairs {other[0]} -> {other[1]} and {key[0]} -> {key[1]} get one file name "
                             f"{output_name(p)}; rename one of the images")


def pidm_name(image_rel: str) -> str | None:
    """PIDM's DeepFashion name of an image path ('./img/MEN/Tees_Tanks/id_00007301/04_7_additional.jpg'
    -> 'fashionMENTees_Tanksid0000730104_7additional': 'fashion', then the four components with
    the id's '_' and all but the first '_' of the file stem removed, no extension); None for a
    path that is not <gender>/<category>/<id>/<file>."""
    parts = _img_parts(image_rel)
    if len(parts) != 4:
        return None
    gender, category, person, file = parts
    head, sep, tail = PurePosixPath(file).stem.partition("_")
    return f"fashion{gender}{category}{person.replace('_', '')}{head}{sep}{tail.replace('_', '')}"


def expected_names(pair: dict) -> dict:
    """File names under which a generated image of ``pair`` is accepted without a manifest:
    {"authors": ``output_name`` (the FPDM authors' C1, and this one),
    "pidm": '<source>_2_<target>_vis.png' with pidm_name (PIDM's test script), when defined}."""
    names = {"authors": output_name(pair)}
    src, tgt = pidm_name(pair["source_image"]), pidm_name(pair["target_image"])
    if src is not None and tgt is not None:
        names["pidm"] = f"{src}_2_{tgt}_vis.png"
    return names


# ---------------------------------------------------------------------------------------------
# C1's video consistency options

# Frame-by-frame generation (the paper's protocol): each frame its own noise, no cross-frame
# attention. C1's ``shared_noise`` and ``cross_frame_attention`` (README, "Consistency options").
CONSISTENCY_DEFAULTS = {"shared_noise": False, "cross_frame_attention": "off"}


def consistency_text(options: dict | None) -> str:
    """C1's consistency options in words: "frame by frame", "shared noise + cross-frame attention
    to the first frame", ...; "not recorded" for None (another method's images, an older C1)."""
    if options is None:
        return "not recorded"
    parts = ["shared noise"] if options.get("shared_noise") else []
    anchor = options.get("cross_frame_attention", "off")
    if anchor != "off":
        parts.append(f"cross-frame attention to the {anchor} frame")
    return " + ".join(parts) or "frame by frame"


def consistency_used(entries: list) -> tuple[dict | None, str]:
    """(options, words) of the consistency options the entries' images were made with: the one
    record they share, or None with words listing each record and its count when they differ."""
    counts = Counter(json.dumps(e.consistency, sort_keys=True) for e in entries)
    if len(counts) <= 1:
        options = json.loads(next(iter(counts), "null"))
        return options, consistency_text(options)
    return None, "mixed: " + "; ".join(f"{consistency_text(json.loads(k))} ({n} images)"
                                       for k, n in counts.most_common())


# ---------------------------------------------------------------------------------------------
# C1's side


def write_manifest(out_dir: str | Path, pairs: list[dict], size: tuple[int, int], eval_size: tuple[int, int],
                   consistency: dict | None = None) -> Path:
    """``<out_dir>/manifest.json``: one entry per pair with ``generated`` (relative to ``out_dir``,
    at the model ``size``), ``generated_<eval size>``, the pair's ``source_image`` /
    ``target_image`` and, when given, ``consistency`` (C1's video options, see
    ``CONSISTENCY_DEFAULTS``). With ``eval_size == size`` both keys name the one file."""
    out_dir = Path(out_dir)
    entries = [{
        "generated": f"{size_name(size)}/{output_name(p)}",
        f"generated_{size_name(eval_size)}": f"{size_name(eval_size)}/{output_name(p)}",
        "source_image": p["source_image"],
        "target_image": p["target_image"],
        **({"consistency": dict(consistency)} if consistency is not None else {}),
    } for p in pairs]
    return atomic_write_json(out_dir / "manifest.json", entries)


# ---------------------------------------------------------------------------------------------
# C2's side


@dataclass
class EvalEntry:
    """One pair to score: its ground truth and the generated file to use at each eval size."""
    source_image: str
    target_image: str
    truth: Path
    generated: dict = field(default_factory=dict)  # size name -> Path
    output: Path | None = None                      # the manifest's "generated" (the model's output), or the named file
    at_size: dict = field(default_factory=dict)     # size name -> the manifest's "generated_<size>" file
    consistency: dict | None = None                 # the manifest's C1 video options; None: not recorded


def assign_sizes(entries: list[EvalEntry], sizes: list[str]) -> None:
    """Set each entry's file per size: its ``generated_<size>`` file where the manifest has one,
    else its ``output``, which C2 resizes to the size."""
    for e in entries:
        e.generated = {s: e.at_size.get(s, e.output) for s in sizes}


def scored_sizes(entries: list[EvalEntry]) -> list[str]:
    """The sizes ``generated_entries`` gave the entries: the ones asked for, or ``held_sizes``."""
    return list(entries[0].generated) if entries else []


def image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from an image file's header; None when it cannot be read (the input check
    reports such files)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # noqa: BLE001
        return None


def pixel_sizes(paths, workers: int = 8) -> dict:
    """{path: ``image_size``} of image files, read in ``workers`` threads."""
    paths = list(dict.fromkeys(p for p in paths if p is not None))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return dict(zip(paths, pool.map(image_size, paths)))


def _sizes_by_area(sizes) -> list[str]:
    return sorted(sizes, key=lambda s: (parse_size(s)[0] * parse_size(s)[1], parse_size(s)))


def held_sizes(entries: list[EvalEntry], workers: int = 8) -> tuple[list[str], list[str]]:
    """(sizes, problems): the sizes, smallest first, at which every entry has a generated image of
    its own, not made by C2: a ``generated_<size>`` file of that size, or its ``output`` at that
    size (C1's model size and evaluation size). Entries without a readable image are left to the
    input check. A problem when the images share no size."""
    px = pixel_sizes([p for e in entries for p in (e.output, *e.at_size.values())], workers)
    held, found = None, Counter()
    for e in entries:
        have = {k for k, p in e.at_size.items() if px.get(p) is not None and size_name(px[p]) == k}
        if px.get(e.output) is not None:
            have.add(size_name(px[e.output]))
        if not have:
            continue
        found.update(have)
        held = have if held is None else held & have
    if held is None or held:
        return _sizes_by_area(held or []), []
    listed = ", ".join(f"{s} ({n} of {len(entries)})" for s, n in found.most_common(6))
    return [], [f"eval_sizes=None: the generated images share no size ({listed}); give the sizes to score, "
                f"e.g. --eval_sizes=[(256, 176)]"]


def resize_note(resized_from: list[dict], count: int, size: str) -> str:
    """What ``image_sources``'s ``resized_from`` says, for a table cell: "upscaled by C2 from
    256x176", "downscaled by C1 from the model output at 512x352 (3 of 5 images)", ...; "" when
    no image was resized."""
    h, w = parse_size(size)
    phrases = []
    for r in resized_from:
        sh, sw = parse_size(r["size"])
        verb = "upscaled" if h * w > sh * sw else "downscaled" if h * w < sh * sw else "resized"
        source = f"the model output at {r['size']}" if r["by"] == "C1" else r["size"]
        part = f" ({r['images']} of {count} images)" if r["images"] < count else ""
        phrases.append(f"{verb} by {r['by']} from {source}{part}")
    return ", ".join(phrases)


def image_sources(entries: list[EvalEntry], sizes: list[str], workers: int = 8) -> dict:
    """For each size (HxW), how the images scored at it were made: ``{"generated_images": text,
    "resized_from": [{"size", "by", "images"}, ...]}`` (empty when none was resized). An image is
    resized "by C2" when its file is not of the size (C2 resizes it when loading), "by C1" when it
    is the manifest's ``generated_<size>`` file and the model's output (``generated``) has another
    size: C1 writes its evaluation-size images by resizing the model's output."""
    px = pixel_sizes([p for e in entries for p in (e.output, *e.generated.values())], workers)
    out = {}
    for s in sizes:
        target = parse_size(s)
        counts: Counter = Counter()
        for e in entries:
            f = e.generated[s]
            have, model = px.get(f), px.get(e.output)
            if have is not None and have != target:
                counts[("C2", have)] += 1
            elif f != e.output and e.at_size.get(s) == f and model is not None and model != target:
                counts[("C1", model)] += 1
        resized = [{"size": size_name(src), "by": by, "images": n} for (by, src), n in counts.most_common()]
        unchanged = len(entries) - sum(counts.values())
        if not resized:
            text = f"generated at {s}, not resized"
        else:
            text = resize_note(resized, len(entries), s) + " (bicubic)"
            text += f"; {unchanged} generated at {s}" if unchanged else ""
            if any(r["by"] == "C2" for r in resized):
                text += f"; not what the model generates at {s}"
        out[s] = {"generated_images": text, "resized_from": resized}
    return out


def resolve_naming(naming: str, generated_dir: str | Path) -> str:
    """"manifest" or "names": ``auto`` is "manifest" when ``<generated_dir>/manifest.json`` exists."""
    if naming == "auto":
        return "manifest" if (Path(generated_dir) / "manifest.json").is_file() else "names"
    return naming


def _capped(problems: list[str], what: str, limit: int = 20) -> list[str]:
    return problems[:limit] + ([f"... and {len(problems) - limit} more {what}"] if len(problems) > limit else [])


def _image_problem(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # noqa: BLE001
        return f"{path}: unreadable image ({type(e).__name__}: {e})"
    return None


def _manifest_entries(gdir: Path, root: Path):
    """(entries, count or None, problems) of ``<gdir>/manifest.json``."""
    manifest = gdir / "manifest.json"
    problems, data = [], None
    if not manifest.is_file():
        problems.append(f"{manifest}: manifest not found")
    else:
        try:
            data = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problems.append(f"{manifest}: not valid JSON ({e})")
        if data is not None and (not isinstance(data, list) or not data):
            problems.append(f"{manifest}: expected a non-empty JSON list of entries")
            data = None
    entries: list[EvalEntry] = []
    for i, item in enumerate(data or []):
        keys = ("generated", "source_image", "target_image")
        if not isinstance(item, dict) or any(not isinstance(item.get(k), str) for k in keys):
            problems.append(f"{manifest}: entry {i} must have string keys {', '.join(keys)}; got {item!r}"[:300])
            continue
        at_size = {k[len("generated_"):]: gdir / v for k, v in item.items()
                   if k.startswith("generated_") and isinstance(v, str)}
        consistency = item.get("consistency")
        entries.append(EvalEntry(item["source_image"], item["target_image"], root / item["target_image"],
                                 output=gdir / item["generated"], at_size=at_size,
                                 consistency=consistency if isinstance(consistency, dict) else None))
    return entries, (len(data) if data is not None else None), problems


def _named_entries(gdir: Path, root: Path, test_pairs: str):
    """(entries, count or None, problems) of a folder of generated images named after the test
    pairs (``expected_names``), without a manifest: every pair must match exactly one image
    directly in ``gdir`` and every image there must match a pair."""
    pair_file = root / test_pairs
    pairs, problems = read_pair_file(pair_file)
    if not gdir.is_dir():
        return [], None, problems + [f"{gdir}: generated folder not found"]
    files = {p.name: p for p in sorted(gdir.iterdir())
             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")}
    wanted: set = set()  # every accepted file name
    entries: list[EvalEntry] = []
    missing, ambiguous = [], []
    for pair in pairs:
        names = expected_names(pair)
        wanted.update(names.values())
        found = [files[n] for n in names.values() if n in files]
        if not found:
            missing.append(f"{gdir / names['authors']}: generated image of {pair['source_image']} -> "
                           f"{pair['target_image']} missing")
        elif len(found) > 1:
            ambiguous.append(f"{pair['source_image']} -> {pair['target_image']}: {len(found)} generated images "
                             f"match ({', '.join(p.name for p in found)}); keep one")
        else:
            entries.append(EvalEntry(pair["source_image"], pair["target_image"], root / pair["target_image"],
                                     output=found[0]))
    extra = [f"{p}: matches no pair of {pair_file}" for name, p in files.items() if name not in wanted]
    if pairs and len(missing) == len(pairs):
        example = expected_names(pairs[0])
        problems.append(f"{gdir}: no manifest.json and no image named after a pair of {pair_file}; expected e.g. "
                        + " or ".join(example.values()))
    problems += _capped(missing, "missing generated images") + ambiguous
    problems += _capped(extra, "images matching no pair")
    return entries, len(pairs), problems


def generated_entries(generated_dir: str | Path, dataset_root: str | Path, sizes: list[str] | None, *,
                      naming: str = "auto", test_pairs: str = "test_pairs_data.json", expected_count: int = -1,
                      check_images: bool = True, workers: int = 8) -> tuple[list[EvalEntry], list[str]]:
    """(entries, problems): the generated image of every pair at each of ``sizes`` (size names
    'HxW') and its ground truth ``<dataset_root>/<target_image>``, with every problem found: the
    dataset root, the manifest or the file names, the expected count, duplicated pairs or
    generated files, missing files and (when ``check_images``) images that do not decode.
    ``sizes`` None: the sizes every generated image comes in (``held_sizes``).

    ``naming`` (``NAMINGS``): "manifest" reads ``<generated_dir>/manifest.json``, where the
    generated file for size HxW is the entry's ``generated_HxW`` when present, else
    ``generated``; "names" reads the pairs of ``<dataset_root>/<test_pairs>`` and finds each one's
    image in ``generated_dir`` by its file name (``expected_names``: the FPDM authors' C1
    '<source>_2_<target>.png', or PIDM's '..._vis.png'), the same file for every size; "auto" is
    "manifest" when that file exists, else "names"."""
    root, gdir = Path(dataset_root), Path(generated_dir)
    problems = []
    if not root.is_dir():
        problems.append(f"{root}: dataset_root not found")
    mode = resolve_naming(naming, gdir)
    if mode == "manifest":
        source = gdir / "manifest.json"
        entries, count, found = _manifest_entries(gdir, root)
        what = "entries"
    elif mode == "names":
        source = root / test_pairs
        entries, count, found = _named_entries(gdir, root, test_pairs)
        what = "pairs"
    else:
        source, entries, count, what = None, [], None, ""
        found = [f"naming={naming!r}: expected one of {', '.join(NAMINGS)}"]
    problems += found
    if sizes is None:
        sizes, found = held_sizes(entries, workers)
        problems += found
    assign_sizes(entries, sizes)

    if expected_count >= 0 and count is not None and count != expected_count:
        problems.append(f"{source}: {count} {what}, expected {expected_count}")
    seen_pairs: dict = {}
    for i, e in enumerate(entries):
        seen_pairs.setdefault((e.source_image, e.target_image), []).append(i)
    for (s, t), idx in seen_pairs.items():
        if len(idx) > 1:
            problems.append(f"{source}: pair {s} -> {t} listed {len(idx)} times (entries {idx[:5]})")
    for s in sizes:
        seen_files: dict = {}
        for i, e in enumerate(entries):
            seen_files.setdefault(e.generated[s], []).append(i)
        for p, idx in seen_files.items():
            if len(idx) > 1:
                problems.append(f"{p}: generated file used by {len(idx)} entries at {s} (entries {idx[:5]})")

    to_read = []
    for e in entries:
        if not e.truth.is_file():
            problems.append(f"{e.truth}: ground truth of {e.source_image} -> {e.target_image} missing")
        else:
            to_read.append(e.truth)
        for p in dict.fromkeys(e.generated.values()):
            if not p.is_file():
                problems.append(f"{p}: generated image of {e.source_image} -> {e.target_image} missing")
            else:
                to_read.append(p)
    if check_images and to_read:
        to_read = list(dict.fromkeys(to_read))
        with ThreadPoolExecutor(max(1, workers)) as pool:
            problems += [p for p in pool.map(_image_problem, to_read) if p]
    return entries, problems


# ---------------------------------------------------------------------------------------------
# videos


@dataclass
class EvalVideo:
    """The pairs of one source image whose targets are the frames of one video, in frame order."""
    name: str                 # the targets' folder below img: '<split>/<video>'
    source_image: str
    entries: list             # one pair per frame, ordered by frame number: C2's EvalEntry, C1's pair dicts


def frame_number(image_rel: str) -> int | None:
    """The number ending a frame's file stem ('./img/test/v/images0042.png' -> 42); None without one."""
    m = _FRAME_NUMBER.search(PurePosixPath(image_rel).stem)
    return int(m.group(1)) if m else None


def video_name(image_rel: str) -> str:
    """The folder of a frame below ``img``: './img/test/v/images0001.png' -> 'test/v' (a path that
    does not start with ./img keeps its whole folder)."""
    try:
        parts = _img_parts(image_rel)
    except ValueError:
        parts = PurePosixPath(image_rel).parts
        parts = parts[1:] if parts and parts[0] == "." else parts
    return PurePosixPath(*parts).parent.as_posix()


def _examples(items: list, limit: int = 3) -> str:
    return ", ".join(str(i) for i in items[:limit]) + (", ..." if len(items) > limit else "")


def _pair_images(pair) -> tuple[str, str]:
    """(source image, target image) of a pair: C2's ``EvalEntry`` or a pair file's dict (C1)."""
    if isinstance(pair, dict):
        return pair["source_image"], pair["target_image"]
    return pair.source_image, pair.target_image


def group_videos(pairs: list) -> tuple[list[EvalVideo], list[str]]:
    """(videos, reasons): the pairs (C2's ``EvalEntry``s or C1's pair dicts) grouped by source
    image, in order of first appearance, each group's frames sorted by ``frame_number`` (a target
    without one first). ``reasons`` says why the pairs do not form videos (empty when they do): no
    source image with several targets, a source whose targets lie in several folders, or targets
    whose file stem does not end in a frame number. DeepFashion's test pairs give reasons (its file
    names end in a view, '01_1_front'); PHOENIX's give none. C2 scores videos only without reasons
    (``resolve_temporal``); C1 writes the groups it is asked to write either way."""
    groups: dict[str, list] = {}
    for p in pairs:
        groups.setdefault(_pair_images(p)[0], []).append(p)
    targets = {s: [_pair_images(p)[1] for p in g] for s, g in groups.items()}
    reasons = []
    if groups and max(len(g) for g in groups.values()) < 2:
        reasons.append("no source image has more than one target")
    folders = {s: {video_name(t) for t in ts} for s, ts in targets.items()}
    spread = [f"{s} ({len(f)} folders)" for s, f in folders.items() if len(f) > 1]
    if spread:
        reasons.append(f"{len(spread)} source image(s) have targets in several folders: {_examples(spread)}")
    unnumbered = [t for ts in targets.values() for t in ts if frame_number(t) is None]
    if unnumbered:
        reasons.append(f"{len(unnumbered)} target(s) have no frame number ending the file name: "
                       f"{_examples(unnumbered)}")
    videos = [EvalVideo(video_name(targets[s][0]), s, sorted(g, key=lambda p: frame_number(_pair_images(p)[1]) or 0))
              for s, g in groups.items()]
    return videos, reasons


def resolve_temporal(temporal: str, entries: list[EvalEntry]) -> tuple[list[EvalVideo], str | None, list[str]]:
    """(videos to score, reason when none are, problems) of C2's ``temporal`` setting: "off" scores
    none; "auto" scores the videos when the pairs form them (``group_videos``); "on" requires them,
    each reason they do not being a problem."""
    if temporal not in TEMPORAL_MODES:
        return [], f"temporal={temporal!r}", [f"temporal={temporal!r}: expected one of {', '.join(TEMPORAL_MODES)}"]
    if temporal == "off":
        return [], "off (temporal='off')", []
    videos, reasons = group_videos(entries)
    if not reasons:
        return videos, None, []
    if temporal == "on":
        return [], reasons[0], [f"temporal='on' but the evaluated pairs do not form videos: {r}" for r in reasons]
    return [], f"the evaluated pairs do not form videos (temporal='auto'): {reasons[0]}", []


def video_problems(videos: list[EvalVideo], dataset_root: str | Path) -> list[str]:
    """Every video that is not whole: a frame of its ground-truth folder (an image file whose stem
    ends in a number) without a pair, a frame number given twice, or a folder whose frames are
    the targets of several source images (a video is the pairs of one source)."""
    root = Path(dataset_root)
    problems: list[str] = []
    sources: dict[str, list[str]] = {}
    for v in videos:
        sources.setdefault(v.name, []).append(v.source_image)
    for name, srcs in sources.items():
        if len(srcs) > 1:
            problems.append(f"{root / 'img' / name}: frames of video {name} are the targets of {len(srcs)} source "
                            f"images ({_examples(srcs)}); a video is the pairs of one source image")
    for v in videos:
        folder = v.entries[0].truth.parent
        numbers = [frame_number(e.target_image) for e in v.entries]
        twice = sorted(n for n, k in Counter(numbers).items() if k > 1)
        if twice:
            problems.append(f"{folder}: video {v.name} has frame number(s) {_examples(twice)} more than once")
        try:
            files = [n for n in os.listdir(folder)
                     if Path(n).suffix.lower() in IMAGE_SUFFIXES and frame_number(n) is not None]
        except OSError:
            continue  # a missing ground-truth folder: each of its frames is already a problem
        have = set(numbers)
        missing = sorted((n for n in files if frame_number(n) not in have), key=frame_number)
        if missing:
            problems.append(f"{folder}: video {v.name}: {len(missing)} of its {len(files)} frames have no pair "
                            f"with source {v.source_image} ({_examples(missing)}); score whole videos")
    return _capped(problems, "incomplete videos")


__all__ = [
    "CONSISTENCY_DEFAULTS", "EvalEntry", "EvalVideo", "IMAGE_SUFFIXES", "ManifestError", "NAMINGS", "TEMPORAL_MODES",
    "assign_sizes", "authors_name", "check_output_names", "consistency_text", "consistency_used", "expected_names",
    "frame_number", "generated_entries", "group_videos", "held_sizes",
    "image_size", "image_sources", "output_name", "parse_size", "pidm_name", "pixel_sizes", "resolve_naming",
    "resize_note", "resolve_temporal", "scored_sizes", "size_name", "video_name", "video_problems", "write_manifest",
]
