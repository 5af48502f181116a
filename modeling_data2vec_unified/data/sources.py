"""Where rows come from, before any preparation: a local folder or file, or a `datasets` Hub id; read map-style (a
`datasets.Dataset`, `load_rows`) or as a stream (an `IterableDataset`, `open_stream`). The per-modality preparation
(`preparation.py`) then makes the same examples of either.

- map-style: a folder's images (`imagefolder`: subfolders are labels), audio files (.wav .flac .ogg, read with
  soundfile: rows of {"bytes", "path"}), text files (.txt, and tables: .json .jsonl .csv .parquet, which may hold any
  modality: their columns decide); a folder whose files or subfolders are named by split has those splits;
- streams: local shards (json / jsonl, csv, parquet, text, webdataset .tar) or a Hub id, images and audio left
  undecoded (`undecoded_stream`: this package decodes them per row, where errors name the file).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

import datasets
import pyarrow as pa

from .errors import BadExampleError, modality_error

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
TEXT_EXTENSIONS = (".txt", ".json", ".jsonl", ".csv", ".parquet")
# file extension -> how it is loaded: "imagefolder", "audio" (soundfile) or a `datasets` builder
LOADERS = {
    **dict.fromkeys(IMAGE_EXTENSIONS, "imagefolder"),
    **dict.fromkeys(AUDIO_EXTENSIONS, "audio"),
    ".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet",
}
TABLE_LOADERS = ("json", "csv", "parquet")  # tables may hold any modality: their columns decide
LOADER_MODALITY = {"imagefolder": "vision", "audio": "audio", "text": "text"}
STREAM_LOADERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text",
                  ".tar": "webdataset"}
MEDIA = {"vision": "image", "audio": "audio"}  # the modalities whose shards hold files, and what the files are
AUDIO_STRUCT = datasets.Features({"bytes": datasets.Value("binary"), "path": datasets.Value("string")})


# ---- map-style -------------------------------------------------------------------------------------------------


def load_rows(
    modality: str, dataset: str, config_name: str | None, split: str, cache_dir: str | None,
    skip_bad_examples: float | None = None,
) -> tuple[datasets.Dataset, str]:
    """The dataset's rows and a short name for messages: a local folder / file by its files' kinds, else the Hub."""
    path = Path(dataset).expanduser()
    if path.is_dir():
        in_split = _split_files(path, split)
        rows = _load_folder(modality, path, split, in_split, cache_dir, skip_bad_examples)
        source = f"folder {dataset}" + ("" if in_split is None else f" [{split}]")
    elif path.is_file():
        if split != "train":
            raise ValueError(f"file {dataset} is one split (train); split {split!r} needs a folder whose files or "
                             "subfolders are named by split (train* / validation* / test*), or a Hub dataset")
        loader = LOADERS.get(path.suffix.lower())
        if loader is None:
            raise ValueError(f"{dataset} is not a supported data file: {_looked_for()}")
        if LOADER_MODALITY.get(loader, modality) != modality:  # tables: their columns decide
            raise modality_error(f"file {dataset}", LOADER_MODALITY[loader], "a " + path.suffix.lower() + " file",
                                 modality)
        rows, source = _load_files(loader, [path], path.parent, split, cache_dir, skip_bad_examples), f"file {dataset}"
    elif not _plausible_hub_id(dataset):
        raise FileNotFoundError(
            f"dataset {dataset!r} does not exist: give an existing folder or file, 'builtin', or a datasets Hub id "
            "(name or owner/name)"
        )
    else:
        try:
            rows = datasets.load_dataset(dataset, config_name, split=split, cache_dir=cache_dir)
        except Exception as error:  # offline, unknown id, config or split: say what was tried
            raise FileNotFoundError(
                f"{dataset!r} is not a local path, and loading it from the Hub as load_dataset({dataset!r}, "
                f"{config_name!r}, split={split!r}) failed: {type(error).__name__}: {error}. Give an existing folder "
                "or file, 'builtin', or a reachable Hub dataset."
            ) from error
        source = f"Hub dataset {dataset}" + (f" ({config_name})" if config_name else "") + f" [{split}]"
    if len(rows) == 0:
        raise ValueError(f"{source} holds no examples: {_looked_for()}")
    return rows, source


def _plausible_hub_id(name: str) -> bool:
    """'name' or 'owner/name', not a path-like string (./x, /x, ~/x, a/b/c) nor a data file name (x.csv)."""
    return (re.fullmatch(r"[\w][\w.-]*(/[\w][\w.-]*)?", name) is not None
            and Path(name).suffix.lower() not in LOADERS)


def _looked_for() -> str:
    return ("looked for images (" + " ".join(IMAGE_EXTENSIONS) + "), audio (" + " ".join(AUDIO_EXTENSIONS)
            + ") and text (" + " ".join(TEXT_EXTENSIONS) + ")")


def _load_folder(modality: str, root: Path, split: str, in_split: set[Path] | None,
                 cache_dir: str | None, skip_bad_examples: float | None = None) -> datasets.Dataset:
    """A folder's rows: the files of the modality's own kind if any (images, audio, .txt), else its one kind of
    table; files under hidden folders are skipped; `in_split`: the split's files, where the folder is split by name."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for file in sorted(root.rglob("*")):
        loader = LOADERS.get(file.suffix.lower())
        if (loader and file.is_file() and not any(p.startswith(".") for p in file.relative_to(root).parts)
                and (in_split is None or file.resolve() in in_split)):
            groups[loader].append(file)
    if not groups:
        raise ValueError(f"folder {root} has no usable files: {_looked_for()}")
    own = next(loader for loader, m in LOADER_MODALITY.items() if m == modality)
    tables = [loader for loader in TABLE_LOADERS if loader in groups]
    if own in groups:
        loader = own
    elif len(tables) == 1:
        loader = tables[0]
    elif tables:
        raise ValueError(f"folder {root} mixes {' / '.join(tables)} files: point dataset at one file, or a folder "
                         "of one format")
    else:
        loader = next(iter(groups))
        extensions = " ".join(sorted({f.suffix.lower() for f in groups[loader]}))
        raise modality_error(f"folder {root}", LOADER_MODALITY[loader], f"{extensions} files", modality)
    return _load_files(loader, groups[loader], root, split, cache_dir, skip_bad_examples)


def _split_files(root: Path, split: str) -> set[Path] | None:
    """The files of `split` in a folder split by file or subfolder names as `datasets` splits a data folder
    (train* / validation*, valid*, dev*, val* / test*, e.g. LibriSpeech's train-clean-100/ dev-clean/ test-clean/);
    None for a folder without split names (all of it is the train split). Raises ValueError for a split it lacks."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        patterns = get_data_patterns(str(root))
    except Exception:  # no files datasets would read: the caller's checks name what is missing
        patterns = {"train": ["**"]}
    if {str(k): v for k, v in patterns.items()} == {"train": ["**"]}:  # not split by names
        if split != "train":
            raise ValueError(f"folder {root} has no split {split!r}: its files are not named by split (train* / "
                             "validation* / test* files or subfolders, as datasets names them); use split 'train'")
        return None
    files = {str(k): v for k, v in DataFilesDict.from_patterns(patterns, base_path=str(root)).items()}
    if split not in files:
        have = ", ".join(f"{k} ({len(v)} files)" for k, v in files.items())
        raise ValueError(f"folder {root} has no split {split!r}; its files are split by name into: {have}. Pass that "
                         "split's name (--dataset_split / --validation_split), or rename the files")
    return {Path(f).resolve() for f in files[split]}


def _load_files(loader: str, files: list[Path], root: Path, split: str, cache_dir: str | None,
                skip_bad_examples: float | None = None) -> datasets.Dataset:
    if loader == "audio":
        return _audio_file_rows(files, root)
    if loader == "text":
        bad = _lines_not_utf8(files)
        if bad:
            return _utf8_text_rows(files, bad, skip_bad_examples)
    try:
        if loader == "imagefolder" and len(files) > 1:  # data_dir: subfolders give labels (and splits, if named so)
            return datasets.load_dataset("imagefolder", data_dir=str(root), split=split, cache_dir=cache_dir)
        return datasets.load_dataset(loader, data_files=[str(f) for f in files], split="train", cache_dir=cache_dir)
    except Exception as error:  # datasets' messages for an empty or malformed file do not say which file
        names = ", ".join(str(f) for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        raise ValueError(
            f"datasets' {loader!r} builder could not read {names} ({type(error).__name__}: {error}): check that "
            f"the files are not empty or malformed ({_looked_for()})"
        ) from error


def _lines_not_utf8(files: list[Path]) -> dict[Path, list[tuple[int, int, int]]]:
    """The lines of .txt `files` that are not UTF-8, which datasets' 'text' builder fails on without naming the file
    or the line: {file: [(line number, column, byte)]}, read a line at a time."""
    bad = {}
    for path in files:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    bad.setdefault(path, []).append((number, error.start + 1, line[error.start]))
    return bad


def _utf8_text_rows(files: list[Path], bad: dict, skip: float | None) -> datasets.Dataset:
    """Text rows (one per line, as datasets' 'text' builder makes them) without the lines that are not UTF-8, when
    --skip_bad_examples allows that many; else a `BadExampleError` naming the file, the line and the fix."""
    path, ((number, column, byte), *_) = next(iter(bad.items()))
    where = f"line {number} of {path} (byte 0x{byte:02x} at column {column})"
    count = sum(len(v) for v in bad.values())
    if skip is None:
        raise BadExampleError(
            f"{where} is not UTF-8, the encoding text files are read in ({count} such line(s) in all): convert the "
            f"file (e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}`), or pass "
            "--skip_bad_examples 0.01 to skip such lines (counted and logged)"
        )
    lines = []
    for f in files:
        skipped = {n for n, _, _ in bad.get(f, [])}
        with open(f, "rb") as handle:
            lines += [line.rstrip(b"\r\n").decode("utf-8") for n, line in enumerate(handle, 1) if n not in skipped]
    if count > skip * max(len(lines) + count, 1):
        raise BadExampleError(f"{count} of {len(lines) + count} lines are not UTF-8, more than --skip_bad_examples "
                              f"{skip:g} allows (the first: {where}): convert the files to UTF-8")
    logger.warning("skipped %d line(s) that are not UTF-8 (--skip_bad_examples), the first: %s", count, where)
    return datasets.Dataset.from_dict({"text": lines})


def _audio_file_rows(files: list[Path], root: Path) -> datasets.Dataset:
    """Rows of {"bytes": None, "path"} structs (read lazily) and, when every file sits in a subfolder and there are
    several, a "label" ClassLabel named by the file's folder (as `imagefolder` does)."""
    columns = {"audio": [{"bytes": None, "path": str(f)} for f in files]}
    features = {"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}}
    names = sorted({f.parent.name for f in files})
    if all(f.parent != root for f in files) and len(names) > 1:
        columns["label"] = [names.index(f.parent.name) for f in files]
        features["label"] = datasets.ClassLabel(names=names)
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))




# ---- streams ---------------------------------------------------------------------------------------------------


def _source_files(dataset: str, split: str, modality: str | None = None) -> tuple[str, list[str]] | None:
    """(datasets builder, files) of a local file or folder; None for a Hub id. In a folder of image or audio shards,
    .txt files (notes, READMEs), which cannot hold images or audio, are left out with a warning naming them."""
    path = Path(dataset).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in STREAM_LOADERS
                       and not any(p.startswith(".") for p in f.relative_to(path).parts))
        if split != "train":
            files = [f for f in files if f.name.startswith(split) or split in f.relative_to(path).parts[:-1]]
    elif _plausible_hub_id(dataset):
        return None
    else:
        raise FileNotFoundError(f"--streaming: dataset {dataset!r} does not exist: give an existing folder or file "
                                "of json / jsonl / csv / parquet / txt shards, or a datasets Hub id")
    if not files:
        raise ValueError(
            f"--streaming: {dataset} holds no data files" + (f" of split {split!r}" if split != "train" else "")
            + f": looked for {' '.join(STREAM_LOADERS)} shards (a folder of image / audio files streams once its files "
            "are in parquet shards as a {'bytes', 'path'} column, or in webdataset .tar shards), or drop --streaming "
            "to read it map-style")
    kinds = sorted({STREAM_LOADERS.get(f.suffix.lower(), f.suffix) for f in files})
    stray = [f for f in files if STREAM_LOADERS.get(f.suffix.lower()) == "text"]
    if len(kinds) > 1 and modality in MEDIA and 0 < len(stray) < len(files):
        logger.warning("--streaming: left out %d .txt file(s) of %s, which cannot hold %s shards: %s", len(stray),
                       dataset, MEDIA[modality],
                       ", ".join(str(f.relative_to(path)) for f in stray[:5]) + (" ..." if len(stray) > 5 else ""))
        files = [f for f in files if f not in stray]
        kinds = sorted({STREAM_LOADERS.get(f.suffix.lower(), f.suffix) for f in files})
    if len(kinds) > 1 or kinds[0] not in STREAM_LOADERS.values():
        if any(LOADERS.get(f.suffix.lower()) in ("imagefolder", "audio") for f in files):
            raise ValueError(f"--streaming: {dataset} holds image / audio files, not shards: put the files' bytes in "
                             "parquet shards (a column of {'bytes', 'path'}) or in webdataset .tar shards, or drop "
                             "--streaming")
        raise ValueError(f"--streaming: {dataset} mixes {' / '.join(kinds)} files: point --dataset at shards of one "
                         "format")
    return kinds[0], [str(f) for f in files]


def _check_shards(loader: str, files: list[str], skip: float | None) -> list[str]:
    """Local parquet shards whose footer cannot be read are refused (naming the file) or, with --skip_bad_examples,
    dropped with a counted warning; other formats fail when read (naming the file)."""
    if loader != "parquet":
        return files
    import pyarrow.parquet as pq

    good = []
    for file in files:
        try:
            pq.read_metadata(file)
            good.append(file)
        except Exception as error:  # noqa: BLE001: any unreadable footer
            if skip is None:
                raise BadExampleError(f"shard {file} cannot be read ({type(error).__name__}: {error}). Fix or remove "
                                      "it, or pass --skip_bad_examples 0.01 to skip bad shards and examples") from error
            bad = len(files) - len(good) - (len(files) - files.index(file) - 1)  # the bad ones so far
            logger.warning("--skip_bad_examples: skipped shard %s (%s: %s): %d bad shard(s) so far", file,
                           type(error).__name__, error, bad)
    if len(files) - len(good) > (skip or 0) * len(files):
        raise BadExampleError(f"{len(files) - len(good)} of {len(files)} shards cannot be read, more than "
                              f"--skip_bad_examples {skip:g} allows: check the data")
    return good


def open_stream(dataset: str, config_name: str | None, split: str, cache_dir: str | None,
                skip: float | None = None, modality: str | None = None) -> tuple[datasets.IterableDataset, str]:
    """The unshuffled stream and a short name for messages."""
    found = _source_files(dataset, split, modality)
    try:
        if found is None:
            stream = datasets.load_dataset(dataset, config_name, split=split, cache_dir=cache_dir, streaming=True)
            source = f"Hub dataset {dataset} [{split}] (streamed)"
        else:
            loader, files = found
            files = _check_shards(loader, files, skip)
            stream = datasets.load_dataset(loader, data_files=files, split="train", cache_dir=cache_dir,
                                           streaming=True)
            source = f"{dataset} ({len(files)} {loader} shard{'s' * (len(files) > 1)}, streamed)"
    except (ValueError, FileNotFoundError, BadExampleError):
        raise
    except Exception as error:  # offline, unknown id, an empty or malformed shard: say what was tried
        if found is not None:
            names = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
            raise ValueError(f"--streaming: datasets' {found[0]!r} builder could not open {names} "
                             f"({type(error).__name__}: {error}): check that the shards are not empty or "
                             "malformed") from error
        raise FileNotFoundError(f"--streaming: load_dataset({dataset!r}, {config_name!r}, split={split!r}, "
                                f"streaming=True) failed: {type(error).__name__}: {error}. Give local shards or a "
                                "reachable Hub dataset") from error
    return stream, source


def checked_rows(stream, source: str):
    """The stream's rows; a shard `datasets` cannot read (malformed json / csv, a truncated parquet) stops the run with
    an error naming the fix (the stream cannot continue past it: --skip_bad_examples skips only parquet shards whose
    footer is unreadable, at start-up, and undecodable images). datasets logs the file's name as it fails."""
    rows = iter(stream)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001: pyarrow / datasets errors of a bad shard
            raise BadExampleError(
                f"{source}: a shard cannot be read ({type(error).__name__}: {error}; the log above names the file). "
                "Fix or remove the malformed file (a bad shard cannot be skipped once the stream reads it)") from error
        yield row


def undecoded_stream(stream: datasets.IterableDataset) -> datasets.IterableDataset:
    """The stream with its images and audio left undecoded, decoded by this package per row (where errors name the
    file): Image columns as {"bytes", "path"} structs; Audio columns read as plain structs (even Audio(decode=False)
    wants torchcodec, to encode webdataset's members, in datasets 4-5)."""
    for name, feature in (stream.features or {}).items():
        if isinstance(feature, datasets.Image) and feature.decode:
            stream = stream.cast_column(name, datasets.Image(decode=False))
        elif isinstance(feature, datasets.Audio):
            stream = stream.cast_column(name, AUDIO_STRUCT)
    return stream


def stream_features(stream: datasets.IterableDataset, first: dict) -> datasets.Features:
    """The stream's features; where it declares none (csv, text shards), those of its `first` row (a value arrow
    cannot type counts as null: found by its name only)."""
    if stream.features is not None:
        return stream.features
    return datasets.Features({name: _feature_of(value) for name, value in first.items()})


def _feature_of(value):
    try:
        return datasets.Features.from_arrow_schema(pa.schema([("value", pa.array([value]).type)]))["value"]
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return datasets.Value("null")
