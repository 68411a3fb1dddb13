"""Write the reference predictions of the shipped ``camvid-ddrnet23_slim`` (run after packaging a
new weight file with ``scripts/ship_zoo_model.py``; ``tests/test_shipped_model.py`` reads them).

    python tests/data/make_shipped_predictions.py

Writes ``shipped_ddrnet23_slim_predictions.json`` (per shipped sample photo: the class-id
histogram and the SHA-1 of the class-id map) and ``shipped_ddrnet23_slim_0016E5_07959_ids.png``
(the first photo's class ids) next to this file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import effseg

NAME = "camvid-ddrnet23_slim"
HERE = Path(__file__).resolve().parent


def main() -> None:
    torch.set_num_threads(1)
    predictor = effseg.load(NAME)
    photos = {}
    first = None
    for path in effseg.sample_images():
        ids = predictor.predict(path)
        first = ids if first is None else first
        hist = np.bincount(ids.ravel(), minlength=len(predictor.classes)).tolist()
        photos[path.name] = {"hist": hist, "sha1": hashlib.sha1(ids.tobytes()).hexdigest()}
    weights = effseg.zoo.find_pretrained(NAME).path
    record = {
        "model": NAME,
        "weights_sha1": hashlib.sha1(weights.read_bytes()).hexdigest(),
        "note": "class-id histograms and SHA-1 of the argmax on effseg.sample_images(), eager, 1 thread",
        "photos": photos,
    }
    (HERE / "shipped_ddrnet23_slim_predictions.json").write_text(json.dumps(record, indent=1) + "\n")
    Image.fromarray(first).save(HERE / "shipped_ddrnet23_slim_0016E5_07959_ids.png")
    print(f"wrote the predictions of {weights} on {len(photos)} photos")


if __name__ == "__main__":
    main()
