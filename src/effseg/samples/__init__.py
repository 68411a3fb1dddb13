"""Sample street photos shipped with effseg (CamVid val, attributed in ``README.md`` here)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["sample_images"]


def sample_images() -> list[Path]:
    """Paths of the shipped sample photos (480x360 JPEGs), sorted by name.

    >>> import effseg
    >>> [p.name for p in effseg.sample_images()][:1]
    ['camvid_0016E5_07959.jpg']
    """
    folder = Path(str(resources.files("effseg.samples")))
    return sorted(folder.glob("*.jpg"))
