"""A synthetic city: street scenes with pixel-exact labels, no download needed.

:func:`generate_city` writes the Cityscapes layout with *label ids*, so the scenes go
through exactly the loader used for real data::

    <out>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <out>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

How a scene is made (all numpy/OpenCV, vectorised over pixels):

* a pinhole camera 1.3-1.7 m above a flat street; every background pixel is ray-cast
  against the ground plane, the two building-front planes, two backdrop planes behind
  gaps and an end-of-street plane, and the nearest hit wins (a z-buffer).  Textures are
  looked up in world coordinates (metres), so they shrink with distance like real ones;
* ground: asphalt with lane marks, crossings and patches, curbs, paved sidewalks,
  grass/dirt terrain; fronts: buildings with windows and shop floors, walls, fences
  (see-through lattice), hedges; sky with clouds or overcast;
* objects drawn far-to-near (painter's order, hence occlusion) as projected 3D boxes and
  profiles: cars, trucks, buses, trams (Cityscapes "train"), people, riders on bicycles
  and motorcycles, poles, street lamps, traffic signs and lights, trees;
* cast shadows, sun/shade sides, haze, colour casts, blur and sensor noise.

Class colours deliberately overlap (grey asphalt vs grey paving vs grey concrete walls,
green grass vs hedges, grey cars vs road, overcast sky vs pale facades), poles are a few
pixels wide and distant objects tiny, so a bigger model has something to win.

Each image has its own seed ``(seed, split, index)``: the output does not depend on the
number of worker processes.  Hand-rolled because no maintained library renders labelled
street scenes without a GPU game engine.

Modules: :mod:`~effseg.data.synthetic.labels` (class ids, rare classes),
:mod:`~effseg.data.synthetic.camera` (projection, drawing primitives, sensor effects),
:mod:`~effseg.data.synthetic.background` (ray-cast ground, fronts and sky),
:mod:`~effseg.data.synthetic.objects` (placement, poles, trees),
:mod:`~effseg.data.synthetic.road_users` (vehicles, people, riders),
:mod:`~effseg.data.synthetic.scene` (layout; one :class:`Scene` per seed) and
:mod:`~effseg.data.synthetic.writer` (render / write / generate, the public entry points).
"""

from effseg.data.synthetic.labels import RARE_CLASSES, forced_classes
from effseg.data.synthetic.writer import (
    DEFAULT_N_TRAIN,
    DEFAULT_N_VAL,
    DEFAULT_SIZE,
    MARKER,
    SPLIT_CITIES,
    SYNTH_OPTIONS,
    contact_sheet,
    ensure_city,
    generate_city,
    render_scene,
    write_scene,
)

__all__ = [
    "DEFAULT_N_TRAIN",
    "DEFAULT_N_VAL",
    "DEFAULT_SIZE",
    "MARKER",
    "RARE_CLASSES",
    "SPLIT_CITIES",
    "SYNTH_OPTIONS",
    "contact_sheet",
    "ensure_city",
    "forced_classes",
    "generate_city",
    "render_scene",
    "write_scene",
]
