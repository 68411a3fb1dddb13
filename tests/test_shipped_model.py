"""The CamVid model that ships inside the package (src/effseg/zoo), loaded by name."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import effseg
from effseg.errors import ModelError

NAME = "camvid-ddrnet23_slim"
DATA = Path(__file__).resolve().parent / "data"
CAMVID = Path(__file__).resolve().parents[2] / "shared" / "camvid"
if not (CAMVID / "val").is_dir():
    CAMVID = Path("/work/shared/camvid")


@pytest.fixture(scope="module")
def predictor():
    return effseg.load(NAME)


def test_shipped_model_scores_the_measured_pixel_accuracy_on_camvid_val(predictor):
    if not (CAMVID / "val").is_dir():
        pytest.skip(f"CamVid val not found at {CAMVID} (../shared/camvid)")
    stems = sorted(p.stem for p in (CAMVID / "val").glob("*.jpg"))[::20][:5]
    correct = total = 0
    for stem in stems:
        label = np.array(Image.open(CAMVID / "valannot" / f"{stem}.png"))
        pred = predictor.predict(str(CAMVID / "val" / f"{stem}.jpg"))
        assert pred.shape == label.shape == (360, 480)
        valid = label != 11  # void
        correct += int((pred[valid] == label[valid]).sum())
        total += int(valid.sum())
    # Measured when the model was packaged (scripts/ship_zoo_model.py): 813503 / 848340 pixels (the
    # train + val model: these val frames are training frames, so this checks the file, not accuracy).
    # A few pixels may move with another CPU's float rounding; a broken model loses tens of points.
    assert correct / total == pytest.approx(0.95894, abs=0.002)


def test_readme_example_runs_on_a_shipped_sample_photo(predictor):
    photo = effseg.sample_images()[0]
    labels = predictor.predict(photo)
    assert labels.shape == (360, 480) and labels.dtype == np.uint8
    assert predictor.classes[0] == "sky" and len(predictor.classes) == 11
    # The top rows of a street photo are sky or building, the bottom rows road.
    top = np.bincount(labels[:40].ravel(), minlength=11)
    bottom = np.bincount(labels[-40:].ravel(), minlength=11)
    assert top[[0, 1, 5]].sum() > 0.8 * top.sum()  # sky, building, tree
    assert bottom.argmax() == predictor.classes.index("road")


def test_unknown_shipped_name_lists_the_known_ones():
    with pytest.raises(ModelError, match=NAME):
        effseg.load("camvid-nonexistent")


def test_shipped_weights_fit_the_size_limit():
    from effseg.zoo import find_pretrained

    entry = find_pretrained(NAME)
    assert entry.path.stat().st_size <= 20 * 1024 * 1024
    assert entry.input_size == "480x360" and entry.classes == 11


def test_shipped_model_predictions_are_unchanged(predictor) -> None:
    """The class ids of the shipped file on the shipped sample photos, stored when it was packaged
    (tests/data/make_shipped_predictions.py): a change of the weights, the loader or the model's
    function shows here. Another CPU's float rounding may move a few pixels."""
    stored = json.loads((DATA / "shipped_ddrnet23_slim_predictions.json").read_text())
    weights = effseg.zoo.find_pretrained(NAME).path
    assert stored["weights_sha1"] == hashlib.sha1(weights.read_bytes()).hexdigest(), (
        "the shipped weights changed: run tests/data/make_shipped_predictions.py"
    )
    photos = {p.name: p for p in effseg.sample_images()}
    assert sorted(stored["photos"]) == sorted(photos)
    first = predictor.predict(photos["camvid_0016E5_07959.jpg"])
    ids = np.array(Image.open(DATA / "shipped_ddrnet23_slim_0016E5_07959_ids.png"))
    assert (first != ids).sum() <= 20
    for name, want in stored["photos"].items():
        got = first if name == "camvid_0016E5_07959.jpg" else predictor.predict(photos[name])
        hist = np.bincount(got.ravel(), minlength=11)
        assert np.abs(hist - np.array(want["hist"])).sum() <= 40, name
