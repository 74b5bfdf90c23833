"""The 8 Cityscapes categories every segmentation dataset in visionlab is mapped to."""

from __future__ import annotations

import numpy as np

CATEGORY_NAMES: tuple[str, ...] = (
    "void", "flat", "construction", "object", "nature", "sky", "human", "vehicle",
)
NUM_CATEGORIES = len(CATEGORY_NAMES)
VOID = 0
IGNORE_INDEX = 255  # label value excluded from losses and metrics

# Official Cityscapes colours of the categories (cityscapesScripts labels.py, category level).
CATEGORY_COLOURS = np.array(
    [
        (0, 0, 0),        # void
        (128, 64, 128),   # flat
        (70, 70, 70),     # construction
        (153, 153, 153),  # object
        (107, 142, 35),   # nature
        (70, 130, 180),   # sky
        (220, 20, 60),    # human
        (0, 0, 142),      # vehicle
    ],
    dtype=np.uint8,
)


def colorize(mask: np.ndarray) -> np.ndarray:
    """HxW category ids (255 = ignore, drawn white) -> HxWx3 uint8 colours."""
    palette = np.full((256, 3), 255, dtype=np.uint8)
    palette[:NUM_CATEGORIES] = CATEGORY_COLOURS
    return palette[mask]
