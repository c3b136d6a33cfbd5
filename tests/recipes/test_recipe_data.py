"""Tests of hf_slim.recipes.data: offline data sets written by the tests, tiny processors built from local files."""

import csv
import os
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from PIL import Image
from transformers import (
    BertTokenizerFast,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForSequenceClassification,
)

from hf_slim.errors import HfSlimError
from hf_slim.recipes.data import (
    AudioPaddingCollator,
    DatasetSpec,
    build_processor,
    check_columns,
    data_collator_for,
    label_names,
    load_raw,
    preprocess,
)

TEXT = "text-classification"
IMAGE = "image-classification"
AUDIO = "audio-classification"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORDS = ["good", "bad", "movie", "film", "great", "awful", "the", "a", "plot", "acting", "was", "is", "very"]


@pytest.fixture
def cache_dir(tmp_path):
    # Keep the datasets cache of the files written by a test inside that test's tmp_path.
    return str(tmp_path / "hf_cache")


@pytest.fixture
def tokenizer(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def sentence(rng, length):
    return " ".join(rng.choice(WORDS, size=length))


@pytest.fixture
def text_csv(tmp_path):
    """train (20 rows), validation (10) and test (10) csv files with columns text, label (0/1) and an id."""
    rng = np.random.default_rng(0)
    files = {}
    for split, count in (("train", 20), ("validation", 10), ("test", 10)):
        rows = [(f"{split}-{i}", sentence(rng, 3 + i % 5), i % 2) for i in range(count)]
        files[split] = write_csv(tmp_path / f"{split}.csv", rows, header=("id", "text", "label"))
    return files


# -- sklearn digits ------------------------------------------------------------------------------------------------
def test_digits_eval_carved_stratified_and_deterministic(cache_dir):
    spec = DatasetSpec(name="sklearn-digits", eval_fraction=0.2)  # no "validation" split: carved from train
    raw = load_raw(spec, seed=0, cache_dir=cache_dir)
    assert set(raw) == {"train", "eval"}
    assert len(raw["train"]) + len(raw["eval"]) == 1797
    assert len(raw["eval"]) == pytest.approx(0.2 * 1797, abs=10)
    train_counts, eval_counts = Counter(raw["train"]["label"]), Counter(raw["eval"]["label"])
    for label in range(10):
        total = train_counts[label] + eval_counts[label]
        assert eval_counts[label] == round(0.2 * total)
    image = raw["train"][0]["image"]
    assert image.size == (8, 8) and image.mode == "L"
    check_columns(raw, spec, IMAGE)
    assert label_names(raw, spec) == [str(i) for i in range(10)]

    again = load_raw(spec, seed=0, cache_dir=cache_dir)
    assert again["eval"]["label"] == raw["eval"]["label"]
    assert np.array_equal(np.asarray(again["eval"][:20]["image"][5]), np.asarray(raw["eval"][:20]["image"][5]))
    other = load_raw(spec, seed=1, cache_dir=cache_dir)
    assert other["eval"]["label"] != raw["eval"]["label"]


def test_digits_end_to_end_with_config_built_vit(tmp_path, cache_dir):
    spec = DatasetSpec(name="sklearn-digits", eval_split=None, eval_fraction=0.2, max_train_samples=64)
    raw = load_raw(spec, seed=0, cache_dir=cache_dir)
    check_columns(raw, spec, IMAGE)
    config = ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
        num_labels=10,
    )
    processor = build_processor(IMAGE, config=config)
    assert isinstance(processor, ViTImageProcessor)
    assert processor.image_mean == [0.5] and processor.image_std == [0.5]
    assert processor.size == {"height": 8, "width": 8}

    data = preprocess(raw, spec, IMAGE, processor, num_channels=config.num_channels)
    assert set(data) == {"train", "eval"}
    assert len(data["train"]) == 64 and len(data["eval"]) == len(raw["eval"])
    assert data["train"].column_names == ["pixel_values", "labels"]
    row = data["train"][0]
    assert row["pixel_values"].shape == (1, 8, 8) and row["pixel_values"].dtype == torch.float32
    assert -1.0 <= row["pixel_values"].min() and row["pixel_values"].max() <= 1.0
    assert set(data["eval"][:]["labels"].tolist()) == set(range(10))

    collator = data_collator_for(IMAGE, processor)
    batch = collator([data["train"][i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 1, 8, 8)
    assert batch["labels"].dtype == torch.long
    torch.manual_seed(0)
    model = ViTForImageClassification(config)
    assert torch.isfinite(model(**batch).loss)

    # The splits and the collator plug into a Trainer as they are.
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=8,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data["train"], data_collator=collator)
    assert np.isfinite(trainer.train().training_loss)
    assert np.isfinite(trainer.evaluate(data["eval"].select(range(16)))["eval_loss"])


# -- text ----------------------------------------------------------------------------------------------------------
def test_text_csv_tokenized_truncated_and_padded(text_csv, tokenizer, cache_dir):
    spec = DatasetSpec(name="csv", data_files=text_csv, test_split="test", text_column="text", max_length=6)
    raw = load_raw(spec, cache_dir=cache_dir)
    assert {k: len(v) for k, v in raw.items()} == {"train": 20, "eval": 10, "test": 10}
    check_columns(raw, spec, TEXT)
    assert label_names(raw, spec) == ["0", "1"]

    data = preprocess(raw, spec, TEXT, tokenizer)
    assert set(data) == {"train", "eval", "test"}
    assert sorted(data["train"].column_names) == ["attention_mask", "input_ids", "labels", "token_type_ids"]
    assert data["train"]["labels"] == raw["train"]["label"]
    first = data["train"][0]
    words = raw["train"][0]["text"].split()
    assert first["input_ids"] == [2, *tokenizer.convert_tokens_to_ids(words)[:4], 3]
    lengths = [len(ids) for ids in data["train"]["input_ids"]]
    assert max(lengths) == 6 and min(lengths) == 5  # 3..7 words + [CLS]/[SEP], truncated to 6 tokens

    collator = data_collator_for(TEXT, tokenizer)
    rows = [data["train"][i] for i in range(4)]  # 3, 4, 5, 6 words -> 5, 6, 6, 6 tokens
    batch = collator(rows)
    assert batch["input_ids"].shape == (4, 6)
    assert batch["input_ids"][0, -1].item() == tokenizer.pad_token_id
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 1, 0]
    assert batch["labels"].tolist() == [0, 1, 0, 1]
    # Rows without labels (as the evaluation helpers send them) collate too.
    assert "labels" not in collator([{k: v for k, v in row.items() if k != "labels"} for row in rows])


def test_text_pair_and_string_labels_shared_across_splits(tmp_path, tokenizer, cache_dir):
    train = write_csv(
        tmp_path / "train.csv",
        [("good movie", "the plot", "pos"), ("bad film", "awful", "neg"), ("great", "a", "pos")],
        header=("premise", "hypothesis", "label"),
    )
    # Only "pos" in validation: it must still get the id of "pos" in train, not 0.
    validation = write_csv(
        tmp_path / "validation.csv", [("good", "very good", "pos")], header=("premise", "hypothesis", "label")
    )
    spec = DatasetSpec(
        name="csv",
        data_files={"train": train, "validation": validation},
        text_column="premise",
        text_pair_column="hypothesis",
    )
    raw = load_raw(spec, cache_dir=cache_dir)
    check_columns(raw, spec, TEXT)
    assert label_names(raw, spec) == ["neg", "pos"]
    assert raw["train"]["label"] == [1, 0, 1] and raw["eval"]["label"] == [1]
    data = preprocess(raw, spec, TEXT, tokenizer)
    ids = tokenizer.convert_tokens_to_ids
    assert data["eval"][0]["input_ids"] == [2, ids("good"), 3, ids("very"), ids("good"), 3]
    assert data["eval"][0]["token_type_ids"] == [0, 0, 0, 1, 1, 1]


def test_max_samples_honoured(text_csv, cache_dir):
    spec = DatasetSpec(
        name="csv",
        data_files=text_csv,
        test_split="test",
        text_column="text",
        max_train_samples=5,
        max_eval_samples=3,
        max_test_samples=2,
    )
    raw = load_raw(spec, seed=3, cache_dir=cache_dir)
    assert {k: len(v) for k, v in raw.items()} == {"train": 5, "eval": 3, "test": 2}
    assert raw["eval"]["id"] == ["validation-0", "validation-1", "validation-2"]
    assert raw["test"]["id"] == ["test-0", "test-1"]
    assert set(raw["train"]["id"]) <= {f"train-{i}" for i in range(20)}
    assert raw["train"]["id"] != [f"train-{i}" for i in range(5)]  # a seeded sample, not the first rows
    assert load_raw(spec, seed=3, cache_dir=cache_dir)["train"]["id"] == raw["train"]["id"]
    assert load_raw(spec, seed=4, cache_dir=cache_dir)["train"]["id"] != raw["train"]["id"]


def test_eval_carve_is_disjoint_stratified_and_seeded(text_csv, cache_dir):
    spec = DatasetSpec(name="csv", data_files={"train": text_csv["train"]}, eval_split=None, eval_fraction=0.2)
    raw = load_raw(spec, seed=0, cache_dir=cache_dir)
    train_ids, eval_ids = set(raw["train"]["id"]), set(raw["eval"]["id"])
    assert not train_ids & eval_ids and len(train_ids | eval_ids) == 20
    assert Counter(raw["eval"]["label"]) == {0: 2, 1: 2}
    assert set(load_raw(spec, seed=0, cache_dir=cache_dir)["eval"]["id"]) == eval_ids
    # An existing eval split is used as it is, even with eval_fraction set.
    spec = DatasetSpec(name="csv", data_files=text_csv, eval_fraction=0.2)
    assert len(load_raw(spec, cache_dir=cache_dir)["eval"]) == 10


# -- images and audio ----------------------------------------------------------------------------------------------
@pytest.fixture
def image_dir(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for split, count in (("train", 3), ("validation", 2)):
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(10 + i, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return str(root)


@pytest.mark.parametrize("num_channels", [3, 1])
def test_imagefolder(image_dir, cache_dir, num_channels):
    spec = DatasetSpec(name="imagefolder", data_dir=image_dir)
    raw = load_raw(spec, cache_dir=cache_dir)
    assert {k: len(v) for k, v in raw.items()} == {"train": 6, "eval": 4}
    check_columns(raw, spec, IMAGE)
    assert label_names(raw, spec) == ["cat", "dog"]
    config = ViTConfig(image_size=16, patch_size=4, num_channels=num_channels)
    processor = build_processor(IMAGE, config=config)
    data = preprocess(raw, spec, IMAGE, processor, num_channels=num_channels)
    assert data["eval"][:]["pixel_values"].shape == (4, num_channels, 16, 16)
    assert data["train"][:]["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    batch = data_collator_for(IMAGE, processor)([data["eval"][i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, num_channels, 16, 16)
    assert batch["labels"].tolist() == [0, 0, 1, 1]


@pytest.fixture
def audio_dir(tmp_path):
    soundfile = pytest.importorskip("soundfile", reason="writing WAV files needs soundfile")
    root = tmp_path / "audio"
    seconds = {"no": (0.5, 2.0), "yes": (1.5, 0.25)}
    for label, durations in seconds.items():
        folder = root / "train" / label
        folder.mkdir(parents=True)
        for i, duration in enumerate(durations):
            t = np.arange(int(8000 * duration)) / 8000
            wave = 0.3 * np.sin(2 * np.pi * (300 if label == "no" else 600) * t).astype(np.float32)
            if label == "yes" and i == 0:
                wave = np.stack([wave, 0.5 * wave], axis=1)  # a stereo recording is mixed down to mono
            soundfile.write(folder / f"{i}.wav", wave, 8000)
    return str(root)


def test_audiofolder(audio_dir, cache_dir):
    pytest.importorskip("torchcodec", reason="decoding audio needs torchcodec")
    if shutil.which("ffmpeg") is None:
        pytest.skip("decoding audio with torchcodec needs FFmpeg, which is not installed")
    spec = DatasetSpec(name="audiofolder", data_dir=audio_dir, eval_fraction=0.5, max_audio_seconds=1.0)
    raw = load_raw(spec, seed=0, cache_dir=cache_dir)
    assert {k: len(v) for k, v in raw.items()} == {"train": 2, "eval": 2}
    check_columns(raw, spec, AUDIO)
    assert label_names(raw, spec) == ["no", "yes"]

    config = Wav2Vec2Config(
        vocab_size=10,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
        conv_dim=(16, 16),
        conv_stride=(4, 4),
        conv_kernel=(8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        num_labels=2,
    )
    processor = build_processor(AUDIO, config=config)
    assert isinstance(processor, Wav2Vec2FeatureExtractor) and processor.sampling_rate == 16000
    assert processor.return_attention_mask

    data = preprocess(raw, spec, AUDIO, processor)
    assert sorted(data["train"].column_names) == ["attention_mask", "input_values", "labels"]
    rows = [*data["train"], *data["eval"]]
    lengths = sorted(len(row["input_values"]) for row in rows)
    assert lengths == [4000, 8000, 16000, 16000]  # 0.25 s and 0.5 s at 16 kHz; 1.5 s and 2 s cut to 1 s
    for row in rows:
        values = np.asarray(row["input_values"])
        assert values.ndim == 1 and abs(values.mean()) < 1e-3 and abs(values.std() - 1) < 1e-2  # normalised
        assert row["attention_mask"] == [1] * len(values)

    collator = data_collator_for(AUDIO, processor)
    assert isinstance(collator, AudioPaddingCollator)
    batch = collator(rows)
    assert batch["input_values"].shape == (4, 16000) and batch["input_values"].dtype == torch.float32
    assert batch["attention_mask"].sum(1).tolist() == [len(row["input_values"]) for row in rows]
    short = min(range(4), key=lambda i: len(rows[i]["input_values"]))
    assert batch["input_values"][short, 4000:].abs().sum() == 0
    assert sorted(batch["labels"].tolist()) == [0, 0, 1, 1]
    torch.manual_seed(0)
    assert torch.isfinite(Wav2Vec2ForSequenceClassification(config)(**batch).loss)
    unlabelled = collator([{k: v for k, v in row.items() if k != "labels"} for row in rows[:2]])
    assert "labels" not in unlabelled and unlabelled["input_values"].shape[0] == 2


# -- errors --------------------------------------------------------------------------------------------------------
def _raw(**columns):
    return DatasetDict({"train": Dataset.from_dict(columns), "eval": Dataset.from_dict(columns)})


@pytest.mark.parametrize(
    "raw, spec, task, message",
    [
        (
            _raw(text=["a", "b"], label=[0, 1]),
            DatasetSpec(name="csv", text_column="sentence"),
            TEXT,
            "dataset.text_column: column 'sentence' is not in the train split; available columns: ['text', 'label']",
        ),
        (
            _raw(text=["a", "b"], label=[0, 1]),
            DatasetSpec(name="csv"),
            TEXT,
            "dataset.text_column is required for text-classification",
        ),
        (
            _raw(text=["a", "b"], label=[0, 1]),
            DatasetSpec(name="csv", text_column="text", text_pair_column="text2"),
            TEXT,
            "dataset.text_pair_column: column 'text2' is not in the train split",
        ),
        (
            _raw(text=["a", "b"], target=[0, 1]),
            DatasetSpec(name="csv", text_column="text"),
            TEXT,
            "dataset.label_column: column 'label' is not in the train split; available columns: ['text', 'target']",
        ),
        (
            _raw(text=["a", "b"], label=[0.5, 1.5]),
            DatasetSpec(name="csv", text_column="text"),
            TEXT,
            "regression targets are not supported",
        ),
        (
            _raw(text=["a", "b"], label=["x", "y"]),
            DatasetSpec(name="csv", text_column="text"),
            TEXT,
            "class_encode_column",
        ),
        (
            _raw(text=[1, 2], label=[0, 1]),
            DatasetSpec(name="csv", text_column="text"),
            TEXT,
            "dataset.text_column: column 'text' of the train split holds",
        ),
        (
            _raw(picture=["a.png"], label=[0]),
            DatasetSpec(name="imagefolder"),
            IMAGE,
            "dataset.image_column: column 'image' is not in the train split; available columns: ['picture', 'label']",
        ),
        (
            _raw(wav=["a.wav"], label=[0]),
            DatasetSpec(name="audiofolder", audio_column="speech"),
            AUDIO,
            "dataset.audio_column: column 'speech' is not in the train split; available columns: ['wav', 'label']",
        ),
        (_raw(text=["a"], label=[0]), DatasetSpec(name="csv"), "token-classification", "is not supported"),
    ],
)
def test_check_columns_errors(raw, spec, task, message):
    with pytest.raises(HfSlimError) as err:
        check_columns(raw, spec, task)
    assert message in str(err.value)


def test_check_columns_rejects_splits_with_different_class_names():
    train = Dataset.from_dict({"text": ["a"], "label": [0]}).cast_column("label", ClassLabel(names=["a", "b"]))
    other = Dataset.from_dict({"text": ["a"], "label": [0]}).cast_column("label", ClassLabel(names=["b", "a"]))
    with pytest.raises(HfSlimError, match="dataset.label_column: the splits label column 'label' differently"):
        check_columns(DatasetDict({"train": train, "eval": other}), DatasetSpec(name="csv", text_column="text"), TEXT)


def test_split_errors(text_csv, cache_dir):
    with pytest.raises(HfSlimError, match=r"dataset.train_split: split 'training' .*available splits: \['train'"):
        load_raw(DatasetSpec(name="csv", data_files=text_csv, train_split="training"), cache_dir=cache_dir)
    with pytest.raises(HfSlimError, match=r"dataset.test_split: split 'dev' is not in the data set"):
        load_raw(DatasetSpec(name="csv", data_files=text_csv, test_split="dev"), cache_dir=cache_dir)
    only_train = {"train": text_csv["train"]}
    with pytest.raises(HfSlimError, match=r"dataset.eval_split: split 'validation' .*set dataset.eval_fraction"):
        load_raw(DatasetSpec(name="csv", data_files=only_train), cache_dir=cache_dir)
    with pytest.raises(HfSlimError, match="dataset.eval_split is null and dataset.eval_fraction is not set"):
        load_raw(DatasetSpec(name="csv", data_files=only_train, eval_split=None), cache_dir=cache_dir)


@pytest.mark.parametrize(
    "kwargs, path",
    [
        ({"eval_fraction": 1.5}, "dataset.eval_fraction"),
        ({"max_train_samples": 0}, "dataset.max_train_samples"),
        ({"max_length": 0}, "dataset.max_length"),
        ({"max_audio_seconds": -1.0}, "dataset.max_audio_seconds"),
        ({"name": ""}, "dataset.name"),
    ],
)
def test_spec_validation(kwargs, path):
    with pytest.raises(HfSlimError, match=path):
        DatasetSpec(**{"name": "csv", **kwargs})


def test_label_names():
    with_class_label = _raw(text=["a", "b"], label=[0, 1]).cast_column("label", ClassLabel(names=["neg", "pos"]))
    assert label_names(with_class_label, DatasetSpec(name="csv")) == ["neg", "pos"]
    assert label_names(_raw(text=["a", "b", "c"], label=[2, 0, 1]), DatasetSpec(name="csv")) == ["0", "1", "2"]
    with pytest.raises(HfSlimError, match=r"class ids \[1, 2\] are not 0 .. 1"):
        label_names(_raw(text=["a", "b"], label=[1, 2]), DatasetSpec(name="csv"))


# -- processors ----------------------------------------------------------------------------------------------------
def test_build_processor_from_paths_and_errors(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = build_processor(TEXT, str(tmp_path / "tok"))
    assert loaded("good movie")["input_ids"] == tokenizer("good movie")["input_ids"]
    ViTImageProcessor(size={"height": 4, "width": 4}).save_pretrained(tmp_path / "img")
    assert build_processor(IMAGE, str(tmp_path / "img")).size == {"height": 4, "width": 4}
    Wav2Vec2FeatureExtractor(sampling_rate=8000).save_pretrained(tmp_path / "fe")
    assert build_processor(AUDIO, str(tmp_path / "fe")).sampling_rate == 8000
    assert build_processor(TEXT, processor=tokenizer) is tokenizer

    rgb = build_processor(IMAGE, config=ViTConfig(image_size=(12, 10)))
    assert rgb.size == {"height": 12, "width": 10} and rgb.image_mean == [0.5, 0.5, 0.5]
    with pytest.raises(HfSlimError, match="text-classification needs a tokenizer"):
        build_processor(TEXT, config=ViTConfig())
    with pytest.raises(HfSlimError, match="or the model's config"):
        build_processor(IMAGE)


# -- real data (slow) ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sst2_real_data(tokenizer, cache_dir):
    root = os.path.join(REPO_ROOT, "..", "shared", "data", "sst2")
    if not os.path.isdir(root):
        pytest.skip(f"SST-2 data not found at {root}")
    files = {split: os.path.join(root, f"{split}.csv") for split in ("train", "validation", "test")}
    spec = DatasetSpec(name="csv", data_files=files, test_split="test", text_column="sentence", max_length=64)
    raw = load_raw(spec, cache_dir=cache_dir)
    assert {k: len(v) for k, v in raw.items()} == {"train": 6920, "eval": 872, "test": 1821}
    check_columns(raw, spec, TEXT)
    assert label_names(raw, spec) == ["0", "1"]
    data = preprocess(raw, spec, TEXT, tokenizer)
    assert max(len(ids) for ids in data["train"]["input_ids"]) == 64
    batch = data_collator_for(TEXT, tokenizer)([data["test"][i] for i in range(8)])
    assert batch["input_ids"].shape[0] == 8 and batch["labels"].shape == (8,)
