"""Batch jobs: a manifest (or a folder and one prompt) read into checked edits, grouped into
UNet batches, and one group run with an Editor.

Everything here is independent of where the work runs: the in-process runner and the Ray
runner (laspa.batch.on_ray) plan the same groups from the same manifest and call the same
:func:`run_group`, so that an edit's pixels depend only on the manifest (and the model,
device and thread count), never on which worker ran it or in which order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import provenance
from ..errors import LaspaError, OutputError, ParameterError, first_line
from ..files import replaced_atomically, shortened

#: the summary of a run, one JSON line per manifest item, in OUTDIR
SUMMARY_NAME = "summary.jsonl"
#: the manifest keys that are not method options
ITEM_KEYS = ("image", "prompt", "method", "seed", "output")
#: the image files a folder job takes (by extension, case-insensitive)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: edits of one image per UNet batch unless --batch-size says otherwise
DEFAULT_BATCH_SIZE = 8
#: a manifest larger than this is refused: it is read whole before any work
MAX_MANIFEST_BYTES = 256 * 2**20
#: the folder in OUTDIR holding, for each output, a record of what made it
RECORDS_FOLDER = ".laspa"


class ManifestError(LaspaError):
    """A manifest or folder that cannot be read at all (not one bad line in it)."""


@dataclass(frozen=True)
class Item:
    """One checked edit of a job."""

    line: int  # 1-based line of the manifest (folder jobs: position in name order)
    image: str  # absolute path
    prompt: str
    method: str
    seed: int
    output: str  # a file name in OUTDIR
    options: dict[str, Any] = field(default_factory=dict)
    #: the digest of what makes the output (model, method, options, prompt, seed, the
    #: input's bytes): a rerun keeps an output only if its record names the same
    settings: str = ""


@dataclass(frozen=True)
class Failure:
    """An item refused or failed, with its one-line reason."""

    line: int
    reason: str
    output: str | None = None
    image: str | None = None

    def record(self) -> dict[str, Any]:
        record = {"line": self.line, "status": "failed", "reason": self.reason}
        if self.output is not None:
            record["output"] = self.output
        if self.image is not None:
            record["image"] = self.image
        return record


@dataclass(frozen=True)
class Group:
    """Edits of one image with one method that share one UNet batch: the unit of work.
    Which items form a group follows from the manifest alone, so every runner batches
    (and therefore computes) them alike."""

    image: str
    method: str
    items: tuple[Item, ...]

    def to_json(self) -> str:
        return json.dumps(
            {"image": self.image, "method": self.method, "items": [asdict(i) for i in self.items]}
        )

    @classmethod
    def from_json(cls, text: str) -> Group:
        data = json.loads(text)
        return cls(data["image"], data["method"], tuple(Item(**i) for i in data["items"]))


@dataclass
class Job:
    """A planned job: the groups to run and the items refused before any work."""

    groups: list[Group]
    refused: list[Failure]

    @property
    def items(self) -> int:
        return sum(len(g.items) for g in self.groups) + len(self.refused)


@dataclass(frozen=True)
class Defaults:
    """What the command line gives every item (a manifest line may override each)."""

    method: str = "laspa-x0"
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ reading
def read_manifest(path: Path) -> list[tuple[int, str]]:
    """The manifest's non-blank lines as (line number, text); a file that cannot be read
    as UTF-8 text is a ManifestError (one bad line is not: see :func:`parse_line`)."""
    try:
        if path.is_dir():
            raise ManifestError(f"manifest {shortened(path)} is a directory")
        # a bounded read, not st_size: a device (/dev/zero) or a pipe has no size to ask
        with open(path, "rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest {shortened(path)} is larger than {MAX_MANIFEST_BYTES >> 20} MiB"
            )
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {shortened(path)}") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ManifestError(f"cannot read manifest {shortened(path)}: {reason}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(
            f"manifest {shortened(path)} is not UTF-8 text (byte {error.start})"
        ) from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ManifestError(f"manifest {shortened(path)} holds no edits")
    return lines


def folder_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, in name order."""
    try:
        found = sorted(
            p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ManifestError(f"cannot read folder {shortened(folder)}: {reason}") from None
    if not found:
        known = ", ".join(IMAGE_SUFFIXES)
        raise ManifestError(f"folder {shortened(folder)} holds no images ({known})")
    return found


def parse_line(number: int, text: str, base: Path, defaults: Defaults) -> Item:
    """One manifest line as a checked Item, or ParameterError with the line's reason."""
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as error:
        raise ParameterError(f"not a JSON object: {error.msg} (column {error.colno})") from None
    if not isinstance(entry, dict):
        raise ParameterError(f"not a JSON object but {type(entry).__name__}")
    image = entry.get("image")
    if not isinstance(image, str) or not image:
        raise ParameterError('no "image" (a path, relative to the manifest\'s folder)')
    output = entry.get("output", f"{Path(image).stem}-{number}.png")
    options = {**defaults.options, **{k: v for k, v in entry.items() if k not in ITEM_KEYS}}
    return make_item(
        number, base / image, entry.get("prompt"), entry.get("method", defaults.method),
        entry.get("seed", defaults.seed), output, options,
    )  # fmt: skip


def make_item(
    number: int, image: Path, prompt: Any, method: Any, seed: Any, output: Any, options: dict
) -> Item:
    """An Item whose method, options, prompt, seed and output name are checked; the image
    is checked to exist (it is decoded when its group runs)."""
    from ..methods.base import check_prompt, check_seed, get_method, make_params

    if not isinstance(method, str):
        raise ParameterError(f"method must be text, got {method!r}")
    get_method(method)
    # names, types, ranges, aliases, options that cannot act: the Params' rules, as for
    # the CLI's options; JSON's values are typed already (K "200" is refused, not read)
    make_params(method, options)
    check_prompt(prompt)
    check_seed(seed)
    check_file_name(str(image), "image")
    check_output_name(output)
    path = Path(os.path.abspath(image))
    if not path.is_file():
        raise ParameterError(f"input image not found: {shortened(image)}")
    return Item(number, str(path), prompt, method, seed, output, dict(options))


def check_file_name(name: str, what: str) -> None:
    """Refuse a name the file system cannot be given (a lone surrogate such as "\\ud800",
    which only a JSON escape can write): Python would raise when it first touches it."""
    try:
        os.fsencode(name)
    except UnicodeEncodeError:
        raise ParameterError(f"{what} name is not valid text: {ascii(name)[:80]}") from None


def check_output_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ParameterError(f"output must be a file name, got {name!r}")
    check_file_name(name, "output")
    if "/" in name or os.sep in name or name in (".", "..") or name.startswith("."):
        raise ParameterError(f"output must be a plain file name in the output folder: {name!r}")
    if Path(name).suffix.lower() not in OUTPUT_SUFFIXES:
        raise ParameterError(f"output {name!r} must end in one of {', '.join(OUTPUT_SUFFIXES)}")
    if name == SUMMARY_NAME:
        raise ParameterError(f"output {name!r} is the summary's name")
    if len(os.fsencode(name)) > 200:  # room for the temporary file's prefix and suffix
        raise ParameterError(f"output name is too long: {shortened(name)}")


# ------------------------------------------------------------------ planning
def plan(
    entries: Iterable[tuple[int, Callable[[], Item]]],
    outdir: Path,
    batch_size: int,
    model: str | None = None,
    manifest: Path | None = None,
) -> Job:
    """Check every entry (each a line number and a builder raising on a bad item), refuse
    an output that an earlier line already names or that is any line's input (or the
    manifest), and group the rest: same image, same method, same batch key, in manifest
    order, at most ``batch_size`` per group. Each item gets the digest of its settings
    (``model``: what --model names)."""
    from ..editor import _batches
    from ..methods.base import COMMON_BATCH_KEY, METHODS, make_params

    refused: list[Failure] = []
    built: list[Item] = []
    model_id = provenance.model_identity(model)
    hashes: dict[str, str] = {}  # an input image -> its bytes' digest, read once
    for number, build in entries:
        try:
            built.append(with_settings(build(), model_id, hashes))
        except LaspaError as error:
            refused.append(Failure(number, str(error)))
    inputs: dict[str, int] = {}  # an input image -> the first line that reads it
    if manifest is not None:
        inputs[os.path.realpath(manifest)] = 0
    for item in built:
        inputs.setdefault(os.path.realpath(item.image), item.line)
    claimed: dict[str, int] = {}
    by_image: dict[tuple[str, str], list[Item]] = {}
    for item in built:
        target = os.path.realpath(outdir / item.output)
        reason = None
        if item.output in claimed:
            reason = f"output {item.output} is also line {claimed[item.output]}'s"
        elif target == os.path.realpath(item.image):
            reason = f"output {item.output} would overwrite its own input"
        elif target in inputs and inputs[target] == 0:
            reason = f"output {item.output} would overwrite the manifest"
        elif target in inputs:
            reason = f"output {item.output} would overwrite the input of line {inputs[target]}"
        if reason is not None:
            refused.append(Failure(item.line, reason, image=item.image))
            continue
        claimed[item.output] = item.line
        by_image.setdefault((item.image, item.method), []).append(item)
    refused.sort(key=lambda failure: failure.line)
    groups = []
    for (image, method), items in by_image.items():
        key = (*METHODS[method].batch_key, *COMMON_BATCH_KEY)
        rows = [_Row(make_params(method, item.options)) for item in items]
        for indices in _batches(rows, key, batch_size):
            groups.append(Group(image, method, tuple(items[i] for i in indices)))
    return Job(groups, refused)


@dataclass
class _Row:  # what laspa.editor._batches reads of a row
    params: Any


def with_settings(item: Item, model_id: str, hashes: dict[str, str]) -> Item:
    """``item`` with the digest of everything that makes its output."""
    from dataclasses import replace

    if item.image not in hashes:
        try:
            hashes[item.image] = provenance.file_sha256(item.image)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise ParameterError(f"cannot read image {shortened(item.image)}: {reason}") from None
    settings = {
        "model": model_id, "method": item.method, "prompt": item.prompt, "seed": item.seed,
        "params": provenance.params_record(item.method, item.options),
        "image_sha256": hashes[item.image],
    }  # fmt: skip
    return replace(item, settings=provenance.digest(settings))


def record_path(outdir: Path, output: str) -> Path:
    """Where the record of what made ``output`` lies."""
    return outdir / RECORDS_FOLDER / f"{output}.json"


def is_current(item: Item, outdir: Path) -> bool:
    """Whether the item's output is there and was made with the item's settings: its
    record names the same settings and the bytes the record hashed."""
    output = outdir / item.output
    if not output.is_file():
        return False
    record = provenance.read_record(record_path(outdir, item.output))
    if record is None or record.get("settings") != item.settings:
        return False
    try:
        return record.get("sha256") == provenance.file_sha256(output)
    except OSError:
        return False


def stale_outputs(job: Job, outdir: Path) -> list[str]:
    """The outputs of ``job`` that exist but were not made with their item's settings (by
    another prompt, seed, model, input..., or by a run that recorded nothing)."""
    return [
        item.output
        for group in job.groups
        for item in group.items
        if (outdir / item.output).exists() and not is_current(item, outdir)
    ]


def manifest_entries(path: Path, defaults: Defaults) -> list[tuple[int, Callable[[], Item]]]:
    base = path.resolve().parent

    def builder(number: int, text: str) -> Callable[[], Item]:
        return lambda: parse_line(number, text, base, defaults)

    return [(number, builder(number, text)) for number, text in read_manifest(path)]


def folder_entries(
    folder: Path, prompt: str, defaults: Defaults
) -> list[tuple[int, Callable[[], Item]]]:
    def builder(number: int, image: Path) -> Callable[[], Item]:
        return lambda: make_item(
            number, image, prompt, defaults.method, defaults.seed, f"{image.stem}.png",
            dict(defaults.options),
        )  # fmt: skip

    return [(n, builder(n, image)) for n, image in enumerate(folder_images(folder), 1)]


# ------------------------------------------------------------------ running
def pending(group: Group, outdir: Path) -> list[Item]:
    """The group's items whose output is not there yet or was made with other settings
    (the command refused those unless --overwrite; outputs are written atomically, so one
    that exists is whole)."""
    return [item for item in group.items if not is_current(item, outdir)]


def run_group(editor, group: Group, outdir: Path, worker: str = "local") -> list[dict[str, Any]]:
    """Run one group and write its missing outputs; one summary record per item.

    A group with every output present is not run. Otherwise the whole group runs, even
    where some outputs exist, so that its UNet batch (and so every pixel) is the one a
    fresh run computes; only the missing outputs are written. A failure of the group
    (an image that cannot be read, an option only the model can refuse) is retried edit
    by edit, so that each item gets its own reason and the good ones are done.
    """
    from .. import images

    todo = {item.line for item in pending(group, outdir)}
    records = [_record(item, "exists", worker) for item in group.items if item.line not in todo]
    if not todo:
        return records
    try:
        picture = images.load_image(group.image)
    except LaspaError as error:
        return records + [_failed(item, error) for item in group.items if item.line in todo]
    try:
        results = _edit(editor, picture, group.method, group.items)
    except Exception as error:  # any failure is reported in the summary; the job goes on
        if len(group.items) == 1:
            return records + [_failed(group.items[0], error)]
        # alone, each item gets its own reason and the good ones are done
        alone = [Group(group.image, group.method, (i,)) for i in group.items if i.line in todo]
        return records + [r for single in alone for r in run_group(editor, single, outdir, worker)]
    for item, result in zip(group.items, results, strict=True):
        if item.line not in todo:
            continue
        try:
            save_output(result.image, item, outdir)
        except LaspaError as error:
            records.append(_failed(item, error))
            continue
        record = _record(item, "done", worker)
        record["seconds"], record["unet_evals"] = round(result.seconds, 4), result.unet_evals
        record["threads"] = _torch_threads()  # the last bit of CPU results depends on it
        records.append(record)
    return records


def save_output(picture, item: Item, outdir: Path) -> None:
    """Write the output, then the record of what made it (each atomically; a crash between
    the two leaves an output without a record, which a rerun does not trust)."""
    from .. import images

    images.save_image(picture, outdir / item.output)
    try:
        output_hash = provenance.file_sha256(outdir / item.output)
        (outdir / RECORDS_FOLDER).mkdir(exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputError(f"cannot record {shortened(item.output)}: {reason}") from None
    record = {
        "output": item.output, "sha256": output_hash, "settings": item.settings,
        "image": item.image, "prompt": item.prompt, "method": item.method, "seed": item.seed,
        "options": item.options,
    }  # fmt: skip
    provenance.write_record(record_path(outdir, item.output), record)


def _edit(editor, picture, method: str, items: Sequence[Item]):
    variants = [{"prompt": i.prompt, "seed": i.seed, **i.options} for i in items]
    return editor.edit_many(picture, variants, method)


def _record(item: Item, status: str, worker: str) -> dict[str, Any]:
    return {
        "line": item.line, "status": status, "output": item.output, "image": item.image,
        "method": item.method, "seed": item.seed, "settings": item.settings, "worker": worker,
    }  # fmt: skip


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _failed(item: Item, error: BaseException) -> dict[str, Any]:
    reason = str(error) if isinstance(error, LaspaError) else f"{type(error).__name__}: "
    if not isinstance(error, LaspaError):
        reason += first_line(error)
    return Failure(item.line, reason, item.output, item.image).record()


def run_local(editor, job: Job, outdir: Path, progress: Callable[[int], None] | None = None):
    """Every group of ``job`` in this process, in manifest order; the summary records."""
    records = [failure.record() for failure in job.refused]
    for group in job.groups:
        records.extend(run_group(editor, group, outdir))
        if progress is not None:
            progress(len(group.items))
    return records


# ------------------------------------------------------------------ the summary
def finish(outdir: Path, records: list[dict[str, Any]], outputs: Iterable[str]) -> dict[str, int]:
    """Write the summary (one record per line, by manifest line; a record repeated by a
    retried worker counts once), remove temporary files a killed worker left beside this
    job's outputs, and count the statuses."""
    by_line: dict[int, dict[str, Any]] = {}
    for record in records:
        by_line.setdefault(record["line"], record)
    with replaced_atomically(outdir / SUMMARY_NAME) as temporary:
        lines = (json.dumps(by_line[n], ensure_ascii=False) + "\n" for n in sorted(by_line))
        # a lone surrogate (a file name that is not UTF-8, as os.fsdecode gives it) is
        # written as its JSON escape, which reads back as the same name
        temporary.write_text("".join(lines), encoding="utf-8", errors="backslashreplace")
    _remove_stale_temporaries(outdir, outputs)
    counts = {"done": 0, "exists": 0, "failed": 0}
    for record in by_line.values():
        counts[record["status"]] += 1
    return counts


def _remove_stale_temporaries(outdir: Path, outputs: Iterable[str]) -> None:
    """laspa.files names a temporary file ``.{name[:32]}.XXXXXXXX.tmp``; a worker killed
    while writing leaves one behind (its output is rewritten by the retry)."""
    names = list(outputs)
    for folder, prefixes in (
        (outdir, {f".{name[:32]}." for name in names}),
        (outdir / RECORDS_FOLDER, {f".{(name + '.json')[:32]}." for name in names}),
    ):
        for path in folder.glob(".*.tmp"):
            if any(path.name.startswith(prefix) for prefix in prefixes):
                path.unlink(missing_ok=True)
