"""Classes of the synthetic city: Cityscapes train ids, the void markers, the rare classes.

Scenes are drawn with Cityscapes *train ids* (``ROAD = 0`` ... ``BICYCLE = 18``) plus two
internal markers for void regions (the ego vehicle's hood, street clutter); the writer turns
them into Cityscapes *label ids* (:func:`label_ids`).
"""

from __future__ import annotations

import numpy as np

from effseg.data.cityscapes import TRAIN_ID_TO_LABEL_ID

# train ids
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)
# Cityscapes label ids of void classes drawn into the labels (-> ignore for training)
EGO_VEHICLE_ID, STATIC_ID = 1, 4
EGO_MARK, STATIC_MARK = 250, 251  # internal markers, turned into label ids on write

# Classes that are not in every scene; each image forces three of them (rotating with the
# index) so that every split of >= 3 images contains all 19 classes.
RARE_CLASSES = ("wall", "fence", "terrain", "truck", "bus", "train", "bicycle", "motorcycle")

RARE_IDS = {"wall": WALL, "fence": FENCE, "terrain": TERRAIN, "truck": TRUCK, "bus": BUS,
            "train": TRAIN, "bicycle": BICYCLE, "motorcycle": MOTORCYCLE}  # fmt: skip


def forced_classes(index: int) -> tuple[str, ...]:
    """The three rare classes image ``index`` of a split must show (rotating through ``RARE_CLASSES``)."""
    return tuple(RARE_CLASSES[(3 * index + k) % len(RARE_CLASSES)] for k in range(3))


def label_ids(label_internal: np.ndarray) -> np.ndarray:
    """Rendered labels ``uint8 (H, W)`` (train ids, void markers) -> Cityscapes label ids ``uint8 (H, W)``."""
    lut = np.zeros(256, np.uint8)  # unlabeled = 0
    lut[: len(TRAIN_ID_TO_LABEL_ID)] = TRAIN_ID_TO_LABEL_ID
    lut[EGO_MARK] = EGO_VEHICLE_ID
    lut[STATIC_MARK] = STATIC_ID
    return lut[label_internal]
