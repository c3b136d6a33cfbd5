"""`distill.augment_text`: a text recipe distils on the train split plus teacher-labelled perturbed copies."""

import csv

import numpy as np
import pytest
import yaml
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

import hf_slim
from hf_slim.distill import trainer as trainer_module
from hf_slim.recipes.schema import RecipeError, load_recipe

WORDS = ["good", "bad", "movie", "film", "great", "awful", "the", "a", "plot", "acting", "was", "is", "very"]
NUM_TRAIN = 24


@pytest.fixture
def text_setup(tmp_path):
    """A tiny BERT with its tokenizer in a folder, and train/validation/test csv files."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
        max_position_embeddings=32, num_labels=2,
    )  # fmt: skip
    model_dir = tmp_path / "model"
    BertForSequenceClassification(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    files = {}
    for split, count in (("train", NUM_TRAIN), ("validation", 8), ("test", 8)):
        path = tmp_path / f"{split}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sentence", "label"])
            writer.writerows((" ".join(rng.choice(WORDS, size=4 + i % 4)), i % 2) for i in range(count))
        files[split] = str(path)
    return model_dir, files


def write_recipe(tmp_path, model_dir, files, distill_options):
    recipe = {
        "task": "text-classification",
        "model": str(model_dir),
        "dataset": {
            "name": "csv", "data_files": files, "train_split": "train", "eval_split": "validation",
            "text_column": "sentence", "label_column": "label", "max_length": 16,
        },
        "stages": [
            {"distill": {"student": {"num_layers": 1}, "max_steps": 2, "per_device_train_batch_size": 8,
                         **distill_options}},
        ],
        "latency": {"repeats": 1, "warmup": 0},
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.mark.parametrize("cache", [True, False])
def test_distill_trains_on_train_plus_unlabelled_perturbed_copies(text_setup, tmp_path, monkeypatch, cache):
    model_dir, files = text_setup
    seen = {}
    init = trainer_module.DistillationTrainer.__init__

    def spy(self, *args, **kwargs):
        seen["dataset"] = kwargs["train_dataset"]
        seen["teacher"] = kwargs.get("teacher_model")
        init(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.DistillationTrainer, "__init__", spy)
    recipe = write_recipe(tmp_path, model_dir, files, {"augment_text": 3, "cache_teacher_logits": cache})
    hf_slim.recipes.run_recipe(recipe, str(tmp_path / "out"))

    dataset = seen["dataset"]
    labels = np.array(dataset["labels"])
    expected = hf_slim.augment_texts(
        [row["sentence"] for row in csv.DictReader(open(files["train"]))], 3, seed=42
    )  # the recipe's seed
    assert len(expected) > NUM_TRAIN
    assert len(dataset) == NUM_TRAIN + len(expected)
    assert (labels[:NUM_TRAIN] >= 0).all() and (labels[NUM_TRAIN:] == -100).all()
    tokenizer = BertTokenizerFast.from_pretrained(model_dir)
    assert dataset[NUM_TRAIN]["input_ids"] == tokenizer(expected[0], truncation=True, max_length=16)["input_ids"]
    # With cached logits every row, perturbed or not, carries the teacher's logits and the teacher is not kept.
    assert ("teacher_logits" in dataset.column_names) is cache
    assert (seen["teacher"] is None) is cache


def test_augment_text_is_off_by_default(text_setup, tmp_path, monkeypatch):
    model_dir, files = text_setup
    init, seen = trainer_module.DistillationTrainer.__init__, {}

    def spy(self, *args, **kwargs):
        seen["rows"] = len(kwargs["train_dataset"])
        init(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.DistillationTrainer, "__init__", spy)
    hf_slim.recipes.run_recipe(write_recipe(tmp_path, model_dir, files, {}), str(tmp_path / "out"))
    assert seen["rows"] == NUM_TRAIN


@pytest.mark.parametrize(
    "options, message",
    [
        ({"augment_text": -1}, "augment_text: must be >= 0"),
        ({"augment_text": 2, "alpha_kd": 0.0}, "alpha_kd is 0"),
        ({"augment_text": "many"}, "augment_text: 'many' is not a valid"),
    ],
)
def test_bad_augment_text_is_refused_with_its_yaml_path(text_setup, tmp_path, options, message):
    model_dir, files = text_setup
    with pytest.raises(RecipeError, match=message) as error:
        load_recipe(write_recipe(tmp_path, model_dir, files, options))
    assert "stages[0].distill.augment_text" in str(error.value)


def test_augment_text_is_refused_for_images_and_text_pairs(text_setup, tmp_path):
    model_dir, files = text_setup
    path = write_recipe(tmp_path, model_dir, files, {"augment_text": 2})
    recipe = yaml.safe_load(open(path))
    recipe["dataset"]["text_pair_column"] = "other"
    pair = tmp_path / "pair.yaml"
    pair.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="text pairs"):
        load_recipe(str(pair))
    recipe["dataset"].pop("text_pair_column")
    recipe["task"] = "image-classification"
    recipe["model"] = {"config": {"model_type": "vit", "hidden_size": 16}}
    image = tmp_path / "image.yaml"
    image.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="perturbs text"):
        load_recipe(str(image))
