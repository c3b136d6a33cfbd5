"""Datasets for recipes: the `dataset:` section of a YAML recipe, turned into preprocessed splits for a `Trainer`.

A recipe describes its data with a [`DatasetSpec`]. The pipeline is split in steps so that everything that can fail
on the data is checked before any model is loaded or trained:

1. [`load_raw`] loads the splits (local `csv`/`json`/`parquet`/`imagefolder`/`audiofolder` files, a Hub dataset, or
   the built-in offline `sklearn-digits`) and renames them to `"train"`, `"eval"` and optionally `"test"`, carving
   the eval split from train (stratified, seeded) when the data set has none.
2. [`check_columns`] checks that the input and label columns exist and have the right types, with messages that name
   the YAML path (`dataset.text_column: ...`) and the available columns.
3. [`build_processor`] builds the tokenizer, image processor or feature extractor, [`preprocess`] runs it over every
   split and keeps only the model inputs and `labels`, and [`data_collator_for`] returns the matching collator.

String labels are supported: [`load_raw`] encodes them as a `ClassLabel` whose names are the sorted union of the
strings in every split, so ids are consistent across splits and [`label_names`] returns the strings.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import HfSlimError, MissingDependencyError

SKLEARN_DIGITS = "sklearn-digits"
TASK_MODALITIES = {
    "text-classification": "text",
    "image-classification": "image",
    "audio-classification": "audio",
}
DEFAULT_INPUT_COLUMNS = {"image": "image", "audio": "audio"}
AUDIO_INSTALL_HINT = 'pip install "hf-slim[audio]" (torchcodec, soundfile) and FFmpeg (e.g. `apt-get install ffmpeg`)'

# Rows per `map` batch: small enough that decoded images and waveforms of one batch fit comfortably in memory.
_BATCH_SIZES = {"text": 1000, "image": 256, "audio": 64}


@dataclass
class DatasetSpec:
    """The `dataset:` section of a recipe: where the data is, which columns to use and how much of it.

    Args:
        name (`str`):
            First argument of `datasets.load_dataset`: a builder (`"csv"`, `"json"`, `"parquet"`, `"imagefolder"`,
            `"audiofolder"`), a Hub dataset id such as `"glue"`, or `"sklearn-digits"` (built in and offline:
            scikit-learn's 1797 8x8 grey digits as an image data set with columns `image` and `label`, 10 classes,
            a single `train` split).
        config (`str`, *optional*):
            Configuration name of a Hub dataset, e.g. `"sst2"` for `glue`.
        data_dir (`str`, *optional*):
            Folder of a local data set (e.g. an `imagefolder`), used as given.
        data_files (`dict[str, str]` or `str`, *optional*):
            Files per split (`{"train": "train.csv", ...}`) or one file (the `train` split), used as given.
        train_split (`str`, *optional*, defaults to `"train"`):
            Split used for training.
        eval_split (`str`, *optional*, defaults to `"validation"`):
            Split used for evaluation during and after training. When `None`, or when the split does not exist and
            `eval_fraction` is set, the eval split is carved from the train split (stratified by label, seeded).
        test_split (`str`, *optional*):
            Split for final numbers, if any.
        eval_fraction (`float`, *optional*):
            Fraction of the train split to hold out as the eval split when there is no eval split.
        text_column (`str`, *optional*):
            Text input column; required for text classification.
        text_pair_column (`str`, *optional*):
            Second text column for sentence-pair tasks.
        image_column (`str`, *optional*):
            Image input column; defaults to `"image"`.
        audio_column (`str`, *optional*):
            Audio input column; defaults to `"audio"`.
        label_column (`str`, *optional*, defaults to `"label"`):
            Column of integer class ids, a `ClassLabel`, or strings (encoded to a `ClassLabel` by [`load_raw`]).
        max_length (`int`, *optional*, defaults to 128):
            Text is truncated to this many tokens.
        max_audio_seconds (`float`, *optional*, defaults to 4.0):
            Audio is truncated to this many seconds; `None` keeps whole recordings.
        max_train_samples (`int`, *optional*):
            Keep this many training rows, drawn by a seeded shuffle.
        max_eval_samples (`int`, *optional*):
            Keep the first rows of the eval split.
        max_test_samples (`int`, *optional*):
            Keep the first rows of the test split.
    """

    name: str
    config: str | None = None
    data_dir: str | None = None
    data_files: dict[str, str] | str | None = None
    train_split: str = "train"
    eval_split: str | None = "validation"
    test_split: str | None = None
    eval_fraction: float | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    image_column: str | None = None
    audio_column: str | None = None
    label_column: str = "label"
    max_length: int = 128
    max_audio_seconds: float | None = 4.0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_test_samples: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise HfSlimError(f"dataset.name: expected a non-empty string, got {self.name!r}.")
        if self.eval_fraction is not None and not 0.0 < self.eval_fraction < 1.0:
            raise HfSlimError(
                f"dataset.eval_fraction: {self.eval_fraction!r} is not a fraction; expected a number between 0 and 1 "
                "(exclusive), e.g. 0.1."
            )
        if self.max_length < 1:
            raise HfSlimError(f"dataset.max_length: {self.max_length!r} must be a positive number of tokens.")
        if self.max_audio_seconds is not None and self.max_audio_seconds <= 0:
            raise HfSlimError(
                f"dataset.max_audio_seconds: {self.max_audio_seconds!r} must be positive (or null to keep whole "
                "recordings)."
            )
        for key in ("max_train_samples", "max_eval_samples", "max_test_samples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise HfSlimError(f"dataset.{key}: {value!r} must be at least 1 (or null to keep every row).")


def _modality(task: str) -> str:
    try:
        return TASK_MODALITIES[task]
    except KeyError:
        raise HfSlimError(f"task {task!r} is not supported; expected one of {', '.join(TASK_MODALITIES)}.") from None


def input_column(spec: DatasetSpec, task: str) -> str | None:
    """The input column of `spec` for `task`: the one given, else the modality's default (`None` for text)."""
    modality = _modality(task)
    given = {"text": spec.text_column, "image": spec.image_column, "audio": spec.audio_column}[modality]
    return given or DEFAULT_INPUT_COLUMNS.get(modality)


# -- loading -------------------------------------------------------------------------------------------------------
def load_sklearn_digits():
    """scikit-learn's bundled 8x8 digits as a `DatasetDict` with one `train` split (offline, no download).

    Columns: `image` (8x8 grey PIL image, the 0-16 intensities scaled to 0-255) and `label` (`ClassLabel` with names
    `"0"` ... `"9"`).
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])})
    train = Dataset.from_dict(
        {"image": [PILImage.fromarray(p) for p in pixels], "label": digits.target.tolist()},
        features=features,
    )
    return DatasetDict({"train": train})


def _load_splits(spec: DatasetSpec, cache_dir: str | None):
    from datasets import DatasetDict, load_dataset

    if spec.name == SKLEARN_DIGITS:
        return load_sklearn_digits()
    kwargs = {"cache_dir": cache_dir}
    if spec.data_dir is not None:
        kwargs["data_dir"] = spec.data_dir
    if spec.data_files is not None:
        kwargs["data_files"] = spec.data_files
    loaded = load_dataset(spec.name, spec.config, **kwargs)
    if not isinstance(loaded, DatasetDict):
        loaded = DatasetDict({"train": loaded})
    return loaded


def _split_error(field: str, split: str, available: list[str], hint: str = "") -> HfSlimError:
    return HfSlimError(
        f"dataset.{field}: split {split!r} is not in the data set; available splits: {available}.{hint}"
    )


def _encode_string_labels(splits, label_column: str):
    """Encode a string label column as one `ClassLabel` (sorted union of every split's strings) in every split."""
    from datasets import ClassLabel, Value

    if not splits or any(label_column not in ds.column_names for ds in splits.values()):
        return splits
    kinds = [ds.features[label_column] for ds in splits.values()]
    if not all(isinstance(kind, Value) and kind.dtype in ("string", "large_string") for kind in kinds):
        return splits
    names = sorted({str(value) for ds in splits.values() for value in ds.unique(label_column) if value is not None})
    class_label = ClassLabel(names=names)
    encoded = {}
    for split, dataset in splits.items():
        features = dataset.features.copy()
        features[label_column] = class_label
        encoded[split] = dataset.map(
            lambda labels: {label_column: class_label.str2int(labels)},
            input_columns=label_column,  # leaves images and audio undecoded
            batched=True,
            features=features,
            keep_in_memory=True,
            load_from_cache_file=False,
            desc=f"Encoding the string labels of the {split} split",
        )
    return type(splits)(encoded)


def _stratified_split(dataset, label_column: str, fraction: float, seed: int):
    """Split `dataset` into `(train, eval)` with about `fraction` of every class in eval; deterministic for a seed.

    Falls back to a plain seeded random split when there is no integer label column to stratify on (the column
    check reports that problem afterwards).
    """
    rng = np.random.default_rng(seed)
    labels = None
    if label_column in dataset.column_names:
        values = np.asarray(dataset.select_columns([label_column]).with_format("numpy")[:][label_column])
        if np.issubdtype(values.dtype, np.integer):
            labels = values
    if labels is None:
        order = rng.permutation(len(dataset))
        count = max(1, round(len(dataset) * fraction))
        eval_indices, train_indices = order[:count], order[count:]
    else:
        eval_parts, train_parts = [], []
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            # A class with a single row stays in train: the model must see every class at least once.
            count = min(round(len(members) * fraction), len(members) - 1)
            eval_parts.append(members[:count])
            train_parts.append(members[count:])
        eval_indices, train_indices = np.concatenate(eval_parts), np.concatenate(train_parts)
    if len(eval_indices) == 0 or len(train_indices) == 0:
        raise HfSlimError(
            f"dataset.eval_fraction: {fraction} of {len(dataset)} training rows leaves an empty "
            f"{'eval' if len(eval_indices) == 0 else 'train'} split; use a larger data set or change eval_fraction."
        )
    return dataset.select(np.sort(train_indices)), dataset.select(np.sort(eval_indices))


def load_raw(spec: DatasetSpec, seed: int = 42, cache_dir: str | None = None):
    """Load the splits described by `spec`, renamed to `"train"`, `"eval"` and (if `spec.test_split`) `"test"`.

    Local paths (`data_dir`, `data_files`) are passed to `datasets.load_dataset` as given; Hub ids are loaded with
    `load_dataset(spec.name, spec.config, ...)`. When `spec.eval_split` is `None`, or names a missing split and
    `spec.eval_fraction` is set, the eval split is carved from train: stratified by label and deterministic for
    `seed`. String labels are encoded as one `ClassLabel` shared by every split. Then `max_train_samples` keeps rows
    of a seeded shuffle of train, `max_eval_samples` and `max_test_samples` keep the first rows.

    Args:
        spec ([`DatasetSpec`]): The data set description.
        seed (`int`, *optional*, defaults to 42): Seed of the eval carve-out and the train subsample.
        cache_dir (`str`, *optional*): `datasets` cache folder; defaults to the `datasets` default.

    Returns:
        `datasets.DatasetDict` with keys `"train"`, `"eval"` and optionally `"test"`.

    Raises:
        [`HfSlimError`]: A split is missing (the message lists the available ones) or no eval split can be made.
    """
    from datasets import DatasetDict

    loaded = _load_splits(spec, cache_dir)
    available = list(loaded)
    if spec.train_split not in loaded:
        raise _split_error("train_split", spec.train_split, available)
    if spec.test_split is not None and spec.test_split not in loaded:
        raise _split_error("test_split", spec.test_split, available)
    has_eval = spec.eval_split is not None and spec.eval_split in loaded
    if not has_eval and spec.eval_fraction is None:
        if spec.eval_split is None:
            raise HfSlimError(
                "dataset.eval_split is null and dataset.eval_fraction is not set; name an eval split or set "
                "eval_fraction (e.g. 0.1) to hold out part of the train split."
            )
        raise _split_error(
            "eval_split",
            spec.eval_split,
            available,
            " Name another split, or set dataset.eval_fraction (e.g. 0.1) to hold out part of the train split.",
        )
    if has_eval and spec.eval_split == spec.train_split:
        raise HfSlimError(
            f"dataset.eval_split: {spec.eval_split!r} is also the train split; evaluate on another split or set "
            "eval_split: null with eval_fraction to hold out part of it."
        )

    splits = {"train": loaded[spec.train_split]}
    if has_eval:
        splits["eval"] = loaded[spec.eval_split]
    if spec.test_split is not None:
        splits["test"] = loaded[spec.test_split]
    raw = _encode_string_labels(DatasetDict(splits), spec.label_column)
    if not has_eval:
        raw["train"], raw["eval"] = _stratified_split(raw["train"], spec.label_column, spec.eval_fraction, seed)
        raw = DatasetDict({key: raw[key] for key in ("train", "eval", "test") if key in raw})

    if spec.max_train_samples is not None and spec.max_train_samples < len(raw["train"]):
        raw["train"] = raw["train"].shuffle(seed=seed).select(range(spec.max_train_samples))
    for key, limit in (("eval", spec.max_eval_samples), ("test", spec.max_test_samples)):
        if key in raw and limit is not None and limit < len(raw[key]):
            raw[key] = raw[key].select(range(limit))
    return raw


# -- checks --------------------------------------------------------------------------------------------------------
def _feature_kind(feature) -> str:
    from datasets import Audio, ClassLabel, Image, Value

    if isinstance(feature, ClassLabel):
        return "classlabel"
    if isinstance(feature, Image):
        return "image"
    if isinstance(feature, Audio):
        return "audio"
    if isinstance(feature, Value):
        if feature.dtype in ("string", "large_string"):
            return "string"
        if feature.dtype.startswith(("int", "uint")):
            return "int"
        return feature.dtype
    return type(feature).__name__


def _check_column(raw, field: str, column: str, allowed: tuple[str, ...], expected: str) -> None:
    for split, dataset in raw.items():
        if column not in dataset.column_names:
            raise HfSlimError(
                f"dataset.{field}: column {column!r} is not in the {split} split; available columns: "
                f"{dataset.column_names}"
            )
        kind = _feature_kind(dataset.features[column])
        if kind not in allowed:
            raise HfSlimError(
                f"dataset.{field}: column {column!r} of the {split} split holds {dataset.features[column]}; "
                f"expected {expected}."
            )


def check_columns(raw, spec: DatasetSpec, task: str) -> None:
    """Check that every split has the task's input column(s) and an integer or `ClassLabel` label column.

    Args:
        raw (`datasets.DatasetDict`): Splits from [`load_raw`].
        spec ([`DatasetSpec`]): The data set description.
        task (`str`): `"text-classification"`, `"image-classification"` or `"audio-classification"`.

    Raises:
        [`HfSlimError`]: Naming the YAML path (e.g. `dataset.text_column`), the missing or mistyped column and the
        available columns, e.g. `dataset.text_column: column 'sentence' is not in the train split; available
        columns: ['text', 'label']`.
    """
    modality = _modality(task)
    column = input_column(spec, task)
    if column is None:
        raise HfSlimError(f"dataset.text_column is required for {task}; name the column that holds the text.")
    if modality == "text":
        _check_column(raw, "text_column", column, ("string",), "strings")
        if spec.text_pair_column is not None:
            _check_column(raw, "text_pair_column", spec.text_pair_column, ("string",), "strings")
    elif modality == "image":
        _check_column(raw, "image_column", column, ("image", "string"), "images (an Image feature or file paths)")
    else:
        _check_column(raw, "audio_column", column, ("audio", "string"), "audio (an Audio feature or file paths)")
    _check_column(
        raw,
        "label_column",
        spec.label_column,
        ("int", "classlabel"),
        "integer class ids or a ClassLabel (string labels are encoded by load_raw; for other data, "
        "`dataset.class_encode_column(...)`); regression targets are not supported",
    )
    names = {split: _class_names(ds, spec.label_column) for split, ds in raw.items()}
    if len({tuple(n) if n is not None else None for n in names.values()}) > 1:
        raise HfSlimError(
            f"dataset.label_column: the splits label column {spec.label_column!r} differently ({names}); the class "
            "ids would not mean the same class in every split. Use one set of class names for all splits."
        )


def _class_names(dataset, label_column: str) -> list[str] | None:
    from datasets import ClassLabel

    feature = dataset.features.get(label_column)
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def label_names(raw, spec: DatasetSpec) -> list[str]:
    """The class names, index `i` naming class id `i`.

    From the `ClassLabel` of the train split if there is one, else the sorted class ids of every split as strings.
    Integer ids must be `0 .. num_labels - 1`.

    Raises:
        [`HfSlimError`]: Integer ids that are not `0 .. n - 1` (they cannot index the classifier's outputs).
    """
    names = _class_names(raw["train"], spec.label_column)
    if names is not None:
        return names
    ids = sorted({int(value) for dataset in raw.values() for value in dataset.unique(spec.label_column)})
    if ids != list(range(len(ids))):
        shown = ids if len(ids) <= 20 else ids[:10] + ["..."] + ids[-5:]
        raise HfSlimError(
            f"dataset.label_column: class ids {shown} are not 0 .. {len(ids) - 1}; map them to consecutive ids "
            "starting at 0, or give the column a ClassLabel."
        )
    return [str(i) for i in ids]


# -- processors ----------------------------------------------------------------------------------------------------
def _require_audio() -> None:
    if importlib.util.find_spec("torchcodec") is None:
        raise MissingDependencyError(
            f"Decoding audio needs 'torchcodec', which is not installed. {AUDIO_INSTALL_HINT}"
        )


def build_processor(task: str, model_name_or_path: str | None = None, config=None, processor=None):
    """The preprocessing object of a task: a tokenizer, an image processor or a feature extractor.

    A checkpoint path (or Hub id) wins: `AutoTokenizer` / `AutoImageProcessor` / `AutoFeatureExtractor`
    `.from_pretrained(model_name_or_path, trust_remote_code=False)`. A model built from a config gets a default one:
    a `ViTImageProcessor` resizing to `config.image_size` with mean and std 0.5 per channel, or a 16 kHz
    `Wav2Vec2FeatureExtractor` that normalises each recording and returns an attention mask. Text has no default: a
    tokenizer needs its vocabulary files.

    Args:
        task (`str`): `"text-classification"`, `"image-classification"` or `"audio-classification"`.
        model_name_or_path (`str`, *optional*): Checkpoint folder or Hub id holding the processor files.
        config (`PretrainedConfig`, *optional*): Config of a model built from scratch.
        processor (*optional*): An already built processor, returned as is.

    Raises:
        [`HfSlimError`]: Neither a path nor (for images and audio) a config is given.
    """
    modality = _modality(task)
    if processor is not None:
        return processor
    if model_name_or_path is not None:
        from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

        auto = {"text": AutoTokenizer, "image": AutoImageProcessor, "audio": AutoFeatureExtractor}[modality]
        return auto.from_pretrained(model_name_or_path, trust_remote_code=False)
    if modality == "text":
        raise HfSlimError(
            f"{task} needs a tokenizer and none can be built from a config; give the path of a checkpoint or a "
            "tokenizer folder (in a recipe: `processor:` or a pretrained `model:`)."
        )
    if config is None:
        raise HfSlimError(f"{task}: give a model_name_or_path to load the processor from, or the model's config.")
    if modality == "image":
        from transformers import ViTImageProcessor

        size = config.image_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        channels = getattr(config, "num_channels", 3)
        return ViTImageProcessor(
            do_resize=True,
            size={"height": height, "width": width},
            image_mean=[0.5] * channels,
            image_std=[0.5] * channels,
        )
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )


# -- preprocessing -------------------------------------------------------------------------------------------------
def _text_fn(tokenizer, spec: DatasetSpec):
    # `truncation` with a max_length above the model's limit would overflow its position embeddings.
    max_length = min(spec.max_length, getattr(tokenizer, "model_max_length", spec.max_length) or spec.max_length)

    def fn(batch):
        texts = batch[spec.text_column]
        pairs = batch[spec.text_pair_column] if spec.text_pair_column else None
        encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        out = dict(encoded)
        out["labels"] = batch[spec.label_column]
        return out

    return fn


def _image_fn(image_processor, column: str, spec: DatasetSpec, num_channels: int):
    mode = "L" if num_channels == 1 else "RGB"

    def fn(batch):
        # Channels-last arrays with an explicit channel axis: image processors reject 2-D (grey) arrays.
        images = [np.asarray(image.convert(mode)) for image in batch[column]]
        images = [image[..., None] if image.ndim == 2 else image for image in images]
        encoded = image_processor(images, input_data_format="channels_last")
        pixel_values = [np.asarray(values, dtype=np.float32) for values in encoded["pixel_values"]]
        return {"pixel_values": pixel_values, "labels": batch[spec.label_column]}

    return fn


def _audio_fn(feature_extractor, column: str, spec: DatasetSpec):
    sampling_rate = feature_extractor.sampling_rate
    max_samples = None if spec.max_audio_seconds is None else int(round(spec.max_audio_seconds * sampling_rate))
    input_name = feature_extractor.model_input_names[0]

    def fn(batch):
        arrays = [np.asarray(audio["array"], dtype=np.float32)[:max_samples] for audio in batch[column]]
        encoded = feature_extractor(arrays, sampling_rate=sampling_rate)
        out = {input_name: [np.asarray(values, dtype=np.float32) for values in encoded[input_name]]}
        if "attention_mask" in encoded:
            out["attention_mask"] = [np.asarray(mask, dtype=np.int32) for mask in encoded["attention_mask"]]
        out["labels"] = batch[spec.label_column]
        return out

    return fn


def preprocess(raw, spec: DatasetSpec, task: str, processor, num_channels: int | None = None):
    """Run the processor over every split, keeping only the model inputs and `labels`.

    - text: tokenized with truncation to `spec.max_length` and no padding (the collator pads each batch) into
      `input_ids`, `attention_mask` (and `token_type_ids` when the tokenizer makes them);
    - image: converted to `"L"` (`num_channels=1`) or `"RGB"` and run through the image processor into
      `pixel_values` (float32); the image splits are formatted as torch tensors;
    - audio: decoded at the feature extractor's sampling rate (mono), truncated to `spec.max_audio_seconds` and run
      through the feature extractor without padding into `input_values` (and `attention_mask` when the extractor
      returns one).

    Runs `Dataset.map` (batched, with a progress bar) in memory: no cache files are written next to the data.

    Args:
        raw (`datasets.DatasetDict`): Splits from [`load_raw`], checked by [`check_columns`].
        spec ([`DatasetSpec`]): The data set description.
        task (`str`): `"text-classification"`, `"image-classification"` or `"audio-classification"`.
        processor: From [`build_processor`].
        num_channels (`int`, *optional*): Image channels the model expects (`config.num_channels`); defaults to the
            number of channels of the image processor's mean, else 3.

    Returns:
        `datasets.DatasetDict` with the same split names as `raw`.
    """
    from datasets import Audio, DatasetDict, Image

    modality = _modality(task)
    column = input_column(spec, task)
    if column is None:
        raise HfSlimError(f"dataset.text_column is required for {task}; name the column that holds the text.")
    if modality == "text":
        fn, verb = _text_fn(processor, spec), "Tokenizing"
    elif modality == "image":
        if num_channels is None:
            mean = getattr(processor, "image_mean", None)
            num_channels = len(mean) if isinstance(mean, (list, tuple)) else 3
        fn, verb = _image_fn(processor, column, spec, num_channels), "Processing images of"
    else:
        _require_audio()
        fn, verb = _audio_fn(processor, column, spec), "Processing audio of"

    out = {}
    for split, dataset in raw.items():
        if modality == "image" and not isinstance(dataset.features[column], Image):
            dataset = dataset.cast_column(column, Image())
        if modality == "audio":
            dataset = dataset.cast_column(column, Audio(sampling_rate=processor.sampling_rate, num_channels=1))
        processed = dataset.map(
            fn,
            batched=True,
            batch_size=_BATCH_SIZES[modality],
            remove_columns=dataset.column_names,
            keep_in_memory=True,
            load_from_cache_file=False,
            desc=f"{verb} the {split} split",
        )
        if modality == "image":
            processed = processed.with_format("torch")
        out[split] = processed
    return DatasetDict(out)


# -- collators -----------------------------------------------------------------------------------------------------
@dataclass
class AudioPaddingCollator:
    """Pad audio rows to the longest in the batch with the feature extractor's `pad`, and stack the labels.

    Rows may lack `labels` (e.g. for prediction). Other fixed-size columns (such as cached teacher logits) are
    stacked with `default_data_collator`.

    Args:
        feature_extractor (`SequenceFeatureExtractor`): The extractor used by [`preprocess`].
    """

    feature_extractor: Any

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, Any]:
        import torch
        from transformers import default_data_collator

        input_name = self.feature_extractor.model_input_names[0]
        padded_keys = (input_name, "attention_mask")
        inputs = [
            {key: np.asarray(row[key]) for key in padded_keys if key in row and row[key] is not None}
            for row in features
        ]
        batch = dict(self.feature_extractor.pad(inputs, padding=True, return_tensors="pt"))
        label_key = next((key for key in ("labels", "label") if key in features[0]), None)
        if label_key is not None:
            batch["labels"] = torch.as_tensor([int(row[label_key]) for row in features], dtype=torch.long)
        rest = [{k: v for k, v in row.items() if k not in (*padded_keys, "labels", "label")} for row in features]
        if rest[0]:
            batch.update(default_data_collator(rest))
        return batch


def data_collator_for(task: str, processor):
    """The collator matching [`preprocess`]: `DataCollatorWithPadding` for text, `default_data_collator` for images
    (fixed size), [`AudioPaddingCollator`] for audio."""
    modality = _modality(task)
    if modality == "text":
        from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

        if not isinstance(processor, PreTrainedTokenizerBase):
            processor = getattr(processor, "tokenizer", processor)  # a multimodal processor wraps its tokenizer
        return DataCollatorWithPadding(processor)
    if modality == "image":
        from transformers import default_data_collator

        return default_data_collator
    return AudioPaddingCollator(processor)


__all__ = [
    "SKLEARN_DIGITS",
    "AudioPaddingCollator",
    "DatasetSpec",
    "build_processor",
    "check_columns",
    "data_collator_for",
    "input_column",
    "label_names",
    "load_raw",
    "load_sklearn_digits",
    "preprocess",
]
