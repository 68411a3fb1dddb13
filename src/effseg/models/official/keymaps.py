"""The documented key maps from the official checkpoints of the four real-time networks to effseg.

Each official repository names its tensors after its own modules; effseg's networks have the same
tensors (same shapes, same function with the options of :data:`OFFICIAL_OPTIONS`) under effseg's
names.  :func:`convert_official` renames a state dict read from an official file, tensor by
tensor, and says which file tensors it could not use and why.  The maps (read from the official
model code, see docs/models.md "Official checkpoints"):

DDRNet-23(-slim), ydhongHIT/DDRNet ``segmentation/DDRNet_23_slim.py``:
  ``layerN[_].i.convK`` / ``.bnK`` -> ``layerN[_].i.convK.0`` / ``.convK.1`` (conv-BN pairs);
  ``spp.scaleK.1`` / ``.3`` (BatchNorm / conv after the pool) -> ``spp.scales.{K-1}.bn`` / ``.conv``;
  ``spp.processK`` -> ``spp.process.{K-1}``; ``final_layer`` / ``seghead_extra`` (``bn1``, ``conv1``,
  ``bn2``, ``conv2``) -> ``final_layer`` / ``aux_head`` (``conv.0``, ``conv.2``, ``bn``, ``cls``).
  The ImageNet file (``classification/DDRNet_23_slim.py``) has ``down5``, ``last_layer`` and
  ``linear`` on top: the classifier, not used.
PIDNet-S/M, XuJiacong/PIDNet ``models/pidnet.py``: as DDRNet, plus ``layer3_d``/``layer4_d``/
  ``layer5_d``, ``pagK.f_x`` / ``.f_y`` -> ``pagK.f_p`` / ``.f_i``, ``seghead_p`` -> ``p_head``,
  ``seghead_d`` -> ``boundary_head``; PAPPM's ``scale_process`` and the light Bag's ``dfm.conv_p``
  / ``dfm.conv_i`` keep their names.  Trained files hold the training wrapper (``model.`` prefix,
  and the loss's class-weight buffers, not used).
BiSeNetV2, CoinCheung/BiSeNet ``lib/models/bisenetv2.py``: ``detail.SK`` -> ``detail.sK``,
  ``segment.S1S2`` / ``S3`` / ``S4`` / ``S5_4`` / ``S5_5`` -> ``semantic.stem`` / ``s3`` / ``s4`` /
  ``s5`` / ``context``; a ``ConvBNReLU``'s ``conv`` / ``bn`` -> ``0`` / ``1``; the stride-2
  gather-and-expansion layer's ``dwconv1.0/1`` and ``dwconv2.0/1`` -> ``dwconv.0/1/2/3``;
  ``bga.left1`` / ``left2`` / ``right1`` / ``right2`` -> ``bga.detail_keep`` / ``detail_down`` /
  ``semantic_up`` / ``semantic_keep``; ``head.conv_out.1`` -> ``head.cls``; the boosters ``auxK``
  (``aux5_4`` -> ``aux5``): ``conv_out.0.1`` -> ``up_conv``, ``conv_out.1`` -> ``cls``.  The ImageNet
  file ``backbone_v2.pth`` is ``{"detail": ..., "segment": ...}`` with the same names.
RegSeg, RolandGao/RegSeg ``blocks.py`` (``exp48_decoder26``): the ``body.`` prefix goes;
  ``ConvBnAct``'s ``conv`` / ``bn`` -> ``0`` / ``1``; in a D block ``convK`` / ``bnK`` ->
  ``convK.0`` / ``convK.1`` except the grouped 3x3: ``conv2`` / ``conv2.convs.i`` ->
  ``conv2.0.convs.i.0`` and its one BatchNorm ``bn2`` is split by channels over effseg's per-branch
  BatchNorms ``conv2.0.convs.i.1`` (the same normalisation, so each folds into its conv);
  ``se.conv1`` / ``se.conv2`` -> ``se.fc1`` / ``se.fc2``; ``shortcut.conv`` / ``.bn`` ->
  ``shortcut.1`` / ``.2``.

The public names are imported from :mod:`effseg.models.official`, whose ``__all__`` lists them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

#: effseg model -> the official repository and model file its key map was read from.
OFFICIAL_SOURCES: dict[str, str] = {
    "ddrnet23_slim": "ydhongHIT/DDRNet segmentation/DDRNet_23_slim.py",
    "pidnet_s": "XuJiacong/PIDNet models/pidnet.py",
    "bisenetv2": "CoinCheung/BiSeNet lib/models/bisenetv2.py",
    "regseg": "RolandGao/RegSeg blocks.py (exp48_decoder26)",
}

#: effseg model -> the options under which it computes the official model's function.
OFFICIAL_OPTIONS: dict[str, dict[str, Any]] = {
    "ddrnet23_slim": {"pool_order": "pool_bn"},
    "pidnet_s": {"pool_order": "pool_bn", "align_corners": True},
    "bisenetv2": {"pool_order": "pool_bn", "upsample": "nearest"},
    "regseg": {},
}

#: file tensors that are not part of a segmentation network: (pattern, why).
_NOT_NETWORK: dict[str, list[tuple[str, str]]] = {
    "ddrnet23_slim": [
        (r"^(down5|last_layer|linear)\.", "the ImageNet classifier of DDRNet's classification model")
    ],
    "pidnet_s": [(r"^(sem_loss|bd_loss)\.", "PIDNet's training wrapper (the loss's buffers)")],
    "bisenetv2": [],
    "regseg": [],
}


@dataclass
class Converted:
    """An official state dict under effseg's names.

    ``state``: effseg name -> tensor; ``origin``: effseg name -> the file's name it came from;
    ``unused``: the file's name -> why it is not used (not part of the network).
    """

    state: dict[str, Tensor] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)


Rule = tuple[str, str | Callable[[re.Match[str]], str]]


def _sub(rules: list[Rule], key: str) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def _renames(within: str, names: Mapping[str, str]) -> list[Rule]:
    """One rule per plain rename ``old`` -> ``new`` of the dotted name part that follows ``within``
    (a pattern anchored at the start; its capture group, if it has one, is kept)."""
    keep = r"\1." if re.compile(within).groups else ""
    return [(rf"{within}{re.escape(old)}\.", f"{keep}{new}.") for old, new in names.items()]


_RESBLOCK = r"^(layer[0-9][_d]*(?:\.\d+)?)\.(conv|bn)([123])\."
_DDR_RULES: list[Rule] = [
    (_RESBLOCK, lambda m: f"{m.group(1)}.conv{m.group(3)}.{0 if m.group(2) == 'conv' else 1}."),
    (r"^spp\.scale([1-4])\.1\.", lambda m: f"spp.scales.{int(m.group(1)) - 1}.bn."),
    (r"^spp\.scale([1-4])\.3\.", lambda m: f"spp.scales.{int(m.group(1)) - 1}.conv."),
    (r"^spp\.process([1-4])\.", lambda m: f"spp.process.{int(m.group(1)) - 1}."),
    *_renames("^", {"seghead_extra": "aux_head", "seghead_p": "p_head", "seghead_d": "boundary_head"}),
    *_renames(
        r"^(final_layer|aux_head|p_head|boundary_head)\.",
        {"bn1": "conv.0", "conv1": "conv.2", "bn2": "bn", "conv2": "cls"},
    ),
    *_renames(r"^(pag[34])\.", {"f_x": "f_p", "f_y": "f_i"}),
]

_BISENET_RULES: list[Rule] = [
    (r"^detail\.S([123])\.", r"detail.s\1."),
    *_renames("^", {"segment.S1S2": "semantic.stem"}),
    (r"^segment\.S([34])\.", r"semantic.s\1."),
    *_renames("^", {"segment.S5_4": "semantic.s5", "segment.S5_5": "semantic.context"}),
    (r"\.dwconv1\.([01])\.", r".dwconv.\1."),
    (r"\.dwconv2\.([01])\.", lambda m: f".dwconv.{int(m.group(1)) + 2}."),
    *_renames(
        r"^(bga)\.",
        {"left1": "detail_keep", "left2": "detail_down", "right1": "semantic_up", "right2": "semantic_keep"},
    ),
    *_renames("^", {"aux5_4": "aux5"}),
    *_renames(r"^(head|aux[2-5])\.", {"conv_out.0.1": "up_conv", "conv_out.1": "cls"}),
    # a ConvBNReLU's conv / bn -> 0 / 1 (the context embedding's lone BatchNorm keeps its name)
    (r"^(?!semantic\.context\.bn\.)(.+)\.conv\.(weight)$", r"\1.0.\2"),
    (r"^(?!semantic\.context\.bn\.)(.+)\.bn\.(\w+)$", r"\1.1.\2"),
]

_STAGE = r"^(stage\w+(?:\.\d+)?)\."  # a RegSeg D block
_REGSEG_RULES: list[Rule] = [
    (r"^body\.", ""),
    *_renames(
        r"^(stem|decoder\.head4|decoder\.head8|decoder\.head16|decoder\.conv4|decoder\.conv8)\.",
        {"conv": "0", "bn": "1"},
    ),
    (rf"{_STAGE}conv2\.weight$", r"\1.conv2.0.convs.0.0.weight"),
    (rf"{_STAGE}conv2\.convs\.(\d+)\.weight$", r"\1.conv2.0.convs.\2.0.weight"),
    (rf"{_STAGE}conv([13])\.weight$", r"\1.conv\2.0.weight"),
    (rf"{_STAGE}bn([13])\.", r"\1.conv\2.1."),
    (rf"{_STAGE}se\.conv([12])\.", r"\1.se.fc\2."),
    *_renames(_STAGE, {"shortcut.conv": "shortcut.1", "shortcut.bn": "shortcut.2"}),
]

_RULES = {
    "ddrnet23_slim": _DDR_RULES,
    "pidnet_s": _DDR_RULES,
    "bisenetv2": _BISENET_RULES,
    "regseg": _REGSEG_RULES,
}


def unwrap_official(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """An official file's state dict under the official names: nested mappings flattened to
    dotted names, wrapper prefixes (``module.``, a training wrapper's ``model.``) removed."""
    return _strip_wrappers(_flatten(state))


def _strip_wrappers(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop ``module.`` (DataParallel/DDP) prefixes, then a training wrapper's ``model.`` prefix
    (PIDNet's / HRNet-style ``FullModel``) when most tensors carry it."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    wrapped = [k for k in out if k.startswith("model.")]
    if wrapped and len(wrapped) * 2 > len(out):
        out = {(k[len("model.") :] if k.startswith("model.") else k): v for k, v in out.items()}
    return out


def _split_regseg_bn2(state: dict[str, Tensor], origin: dict[str, str]) -> None:
    """RegSeg's ``bn2`` (one BatchNorm over the grouped conv's channels) -> effseg's per-branch
    BatchNorms: channel slices, one per dilation branch (``num_batches_tracked`` copied)."""
    for key in [k for k in state if re.search(r"\.bn2\.\w+$", k)]:
        block, stat = key.rsplit(".bn2.", 1)
        parts = sum(
            1 for k in state if re.fullmatch(re.escape(block) + r"\.conv2\.0\.convs\.\d+\.0\.weight", k)
        )
        value = state.pop(key)
        source = origin.pop(key)
        for i in range(max(parts, 1)):
            name = f"{block}.conv2.0.convs.{i}.1.{stat}"
            if value.dim() == 0:
                state[name] = value.clone()
            else:
                n = value.shape[0] // max(parts, 1)
                state[name] = value[i * n : (i + 1) * n].clone()
            origin[name] = f"{source}[{i}/{max(parts, 1)}]" if value.dim() else source


def _flatten(state: Mapping[str, Any], prefix: str = "") -> dict[str, Tensor]:
    """Nested mappings of tensors (BiSeNetV2's ``{"detail": {...}, "segment": {...}}``) -> dotted names."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, Tensor):
            out[f"{prefix}{key}"] = value
    return out


def convert_official(name: str, state: Mapping[str, Any]) -> Converted:
    """``state`` (an official file's state dict, nested or flat, with or without wrapper prefixes)
    under effseg's names for model ``name``; tensors that are not part of the network are listed in
    ``unused`` with the reason. Renaming only: the caller checks the names and shapes against the
    model."""
    flat = unwrap_official(state)
    out = Converted()
    for key, value in flat.items():
        why = next((w for p, w in _NOT_NETWORK.get(name, []) if re.match(p, key)), None)
        if why is not None:
            out.unused[key] = why
            continue
        new = _sub(_RULES[name], key)  # RegSeg's bn2 keeps its name here: split below
        out.state[new] = value
        out.origin[new] = key
    if name == "regseg":
        _split_regseg_bn2(out.state, out.origin)
    return out


def official_options(name: str, converted: Converted) -> dict[str, Any]:
    """The model options an official file of ``name`` implies: :data:`OFFICIAL_OPTIONS`, and for
    BiSeNetV2 ``boosters="official"`` when the file holds CoinCheung's booster heads."""
    options = dict(OFFICIAL_OPTIONS.get(name, {}))
    if name == "bisenetv2" and any(re.match(r"^aux[2-5]\.up_conv\.", k) for k in converted.state):
        options["boosters"] = "official"
    return options


def is_official_layout(name: str, state: Mapping[str, Any]) -> bool:
    """Whether ``state`` looks like an official file of ``name`` (its own names, not effseg's)."""
    flat = unwrap_official(state)
    markers = {
        "ddrnet23_slim": (r"^layer1\.0\.conv1\.weight$",),
        "pidnet_s": (r"^layer1\.0\.conv1\.weight$",),
        "bisenetv2": (r"^detail\.S1\.0\.conv\.weight$",),
        "regseg": (r"^stem\.conv\.weight$",),
    }.get(name, ())
    return any(re.match(m, k) for m in markers for k in flat)
