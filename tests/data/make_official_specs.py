"""Write ``tests/data/official_<model>.json``: the tensor names and shapes of the official
checkpoints of the four real-time networks, as their repositories' model code registers them.

Written by reading the official model code (not copied, not imported: nothing here runs it):

- DDRNet-23-slim: ydhongHIT/DDRNet ``segmentation/DDRNet_23_slim.py`` (``DualResNet`` with
  ``planes=32, spp_planes=128, head_planes=64, augment=True``) and ``classification/
  DDRNet_23_slim.py`` (the ImageNet model: ``planes=32, last_planes=1024``, 1000 classes);
- PIDNet-S: XuJiacong/PIDNet ``models/pidnet.py`` + ``models/model_utils.py`` (``PIDNet(m=2,
  n=3, planes=32, ppm_planes=96, head_planes=128, augment=True)``);
- BiSeNetV2: CoinCheung/BiSeNet ``lib/models/bisenetv2.py`` (``BiSeNetV2(n_classes,
  aux_mode='train')``);
- RegSeg: RolandGao/RegSeg ``model.py`` + ``blocks.py`` (``RegSeg("exp48_decoder26", ...)``).

Each module below mirrors one official module's ``__init__``: the parameters and buffers it
registers, in order (a BatchNorm registers weight, bias, running_mean, running_var and
num_batches_tracked). This is deliberately independent of effseg's model code, so a test that
loads these names through effseg's key maps checks the maps against the official layout.

    python tests/data/make_official_specs.py      # rewrites the JSON files next to it
"""

from __future__ import annotations

import json
import math
from pathlib import Path

Spec = dict[str, list[int]]


def conv(s: Spec, name: str, cin: int, cout: int, k: int, groups: int = 1, bias: bool = False) -> None:
    s[f"{name}.weight"] = [cout, cin // groups, k, k]
    if bias:
        s[f"{name}.bias"] = [cout]


def bn(s: Spec, name: str, c: int) -> None:
    for key in ("weight", "bias", "running_mean", "running_var"):
        s[f"{name}.{key}"] = [c]
    s[f"{name}.num_batches_tracked"] = []


# ---------------------------------------------------------------- DDRNet / PIDNet building blocks


def basic_block(s: Spec, name: str, cin: int, planes: int, downsample: bool) -> None:
    conv(s, f"{name}.conv1", cin, planes, 3)
    bn(s, f"{name}.bn1", planes)
    conv(s, f"{name}.conv2", planes, planes, 3)
    bn(s, f"{name}.bn2", planes)
    if downsample:
        conv(s, f"{name}.downsample.0", cin, planes, 1)
        bn(s, f"{name}.downsample.1", planes)


def bottleneck(s: Spec, name: str, cin: int, planes: int, downsample: bool) -> None:
    conv(s, f"{name}.conv1", cin, planes, 1)
    bn(s, f"{name}.bn1", planes)
    conv(s, f"{name}.conv2", planes, planes, 3)
    bn(s, f"{name}.bn2", planes)
    conv(s, f"{name}.conv3", planes, planes * 2, 1)
    bn(s, f"{name}.bn3", planes * 2)
    if downsample:
        conv(s, f"{name}.downsample.0", cin, planes * 2, 1)
        bn(s, f"{name}.downsample.1", planes * 2)


def make_layer(s: Spec, name: str, block: str, cin: int, planes: int, blocks: int, stride: int = 1) -> None:
    """``_make_layer``: a downsample on the first block when the stride or the width changes."""
    expansion = 2 if block == "bottleneck" else 1
    fn = bottleneck if block == "bottleneck" else basic_block
    fn(s, f"{name}.0", cin, planes, stride != 1 or cin != planes * expansion)
    for i in range(1, blocks):
        fn(s, f"{name}.{i}", planes * expansion, planes, False)


def stem(s: Spec, planes: int) -> None:
    conv(s, "conv1.0", 3, planes, 3, bias=True)
    bn(s, "conv1.1", planes)
    conv(s, "conv1.3", planes, planes, 3, bias=True)
    bn(s, "conv1.4", planes)


def conv_bn_seq(s: Spec, name: str, cin: int, cout: int, k: int) -> None:
    conv(s, f"{name}.0", cin, cout, k)
    bn(s, f"{name}.1", cout)


def bn_relu_conv(s: Spec, name: str, cin: int, cout: int, k: int = 1, groups: int = 1) -> None:
    bn(s, f"{name}.0", cin)
    conv(s, f"{name}.2", cin, cout, k, groups)


def segmenthead(s: Spec, name: str, cin: int, mid: int, cout: int) -> None:
    bn(s, f"{name}.bn1", cin)
    conv(s, f"{name}.conv1", cin, mid, 3)
    bn(s, f"{name}.bn2", mid)
    conv(s, f"{name}.conv2", mid, cout, 1, bias=True)


def pooled_scales(s: Spec, cin: int, branch: int) -> None:
    """``scale1..scale4``: [AvgPool, BatchNorm, ReLU, Conv] -> BatchNorm at 1, conv at 3."""
    for k in (1, 2, 3, 4):
        bn(s, f"spp.scale{k}.1", cin)
        conv(s, f"spp.scale{k}.3", cin, branch, 1)


def ddrnet23_slim(num_classes: int = 19) -> Spec:
    s: Spec = {}
    p, hp = 32, 64
    stem(s, p)
    make_layer(s, "layer1", "basic", p, p, 2)
    make_layer(s, "layer2", "basic", p, 2 * p, 2, 2)
    make_layer(s, "layer3", "basic", 2 * p, 4 * p, 2, 2)
    make_layer(s, "layer4", "basic", 4 * p, 8 * p, 2, 2)
    conv_bn_seq(s, "compression3", 4 * p, hp, 1)
    conv_bn_seq(s, "compression4", 8 * p, hp, 1)
    conv_bn_seq(s, "down3", hp, 4 * p, 3)
    conv(s, "down4.0", hp, 4 * p, 3)
    bn(s, "down4.1", 4 * p)
    conv(s, "down4.3", 4 * p, 8 * p, 3)
    bn(s, "down4.4", 8 * p)
    make_layer(s, "layer3_", "basic", 2 * p, hp, 2)
    make_layer(s, "layer4_", "basic", hp, hp, 2)
    make_layer(s, "layer5_", "bottleneck", hp, hp, 1)
    make_layer(s, "layer5", "bottleneck", 8 * p, 8 * p, 1, 2)
    # DAPPM(planes * 16, spp_planes, planes * 4)
    cin, branch = 16 * p, 128
    pooled_scales(s, cin, branch)
    bn_relu_conv(s, "spp.scale0", cin, branch)
    for k in (1, 2, 3, 4):
        bn_relu_conv(s, f"spp.process{k}", branch, branch, 3)
    bn_relu_conv(s, "spp.compression", branch * 5, 4 * p)
    bn_relu_conv(s, "spp.shortcut", cin, 4 * p)
    segmenthead(s, "seghead_extra", hp, 64, num_classes)
    segmenthead(s, "final_layer", 4 * p, 64, num_classes)
    return s


def ddrnet23_slim_imagenet() -> Spec:
    """The classification DualResNet (``get_model()``: planes 32, last_planes 1024, 1000 classes)."""
    s: Spec = {}
    p, hp = 32, 64
    stem(s, p)
    make_layer(s, "layer1", "basic", p, p, 2)
    make_layer(s, "layer2", "basic", p, 2 * p, 2, 2)
    make_layer(s, "layer3", "basic", 2 * p, 4 * p, 2, 2)
    make_layer(s, "layer4", "basic", 4 * p, 8 * p, 2, 2)
    conv_bn_seq(s, "compression3", 4 * p, hp, 1)
    conv_bn_seq(s, "compression4", 8 * p, hp, 1)
    conv_bn_seq(s, "down3", hp, 4 * p, 3)
    conv(s, "down4.0", hp, 4 * p, 3)
    bn(s, "down4.1", 4 * p)
    conv(s, "down4.3", 4 * p, 8 * p, 3)
    bn(s, "down4.4", 8 * p)
    make_layer(s, "layer3_", "basic", 2 * p, hp, 2)
    make_layer(s, "layer4_", "basic", hp, hp, 2)
    make_layer(s, "layer5_", "bottleneck", hp, hp, 1)
    conv(s, "down5.0", 4 * p, 8 * p, 3)
    bn(s, "down5.1", 8 * p)
    conv(s, "down5.3", 8 * p, 16 * p, 3)
    bn(s, "down5.4", 16 * p)
    make_layer(s, "layer5", "bottleneck", 8 * p, 8 * p, 1)  # stride 1 here: same shapes
    conv(s, "last_layer.0", 16 * p, 1024, 1)
    bn(s, "last_layer.1", 1024)
    s["linear.weight"] = [1000, 1024]
    s["linear.bias"] = [1000]
    return s


def pidnet_s(num_classes: int = 19) -> Spec:
    s: Spec = {}
    p, m, n, ppm, head = 32, 2, 3, 96, 128
    stem(s, p)
    make_layer(s, "layer1", "basic", p, p, m)
    make_layer(s, "layer2", "basic", p, 2 * p, m, 2)
    make_layer(s, "layer3", "basic", 2 * p, 4 * p, n, 2)
    make_layer(s, "layer4", "basic", 4 * p, 8 * p, n, 2)
    make_layer(s, "layer5", "bottleneck", 8 * p, 8 * p, 2, 2)
    conv_bn_seq(s, "compression3", 4 * p, 2 * p, 1)
    conv_bn_seq(s, "compression4", 8 * p, 2 * p, 1)
    for pag in ("pag3", "pag4"):  # PagFM(planes * 2, planes): f_x, f_y = [Conv 1x1, BatchNorm]
        conv_bn_seq(s, f"{pag}.f_x", 2 * p, p, 1)
        conv_bn_seq(s, f"{pag}.f_y", 2 * p, p, 1)
    make_layer(s, "layer3_", "basic", 2 * p, 2 * p, m)
    make_layer(s, "layer4_", "basic", 2 * p, 2 * p, m)
    make_layer(s, "layer5_", "bottleneck", 2 * p, 2 * p, 1)
    basic_block(s, "layer3_d", 2 * p, p, True)  # _make_single_layer
    make_layer(s, "layer4_d", "bottleneck", p, p, 1)
    conv_bn_seq(s, "diff3", 4 * p, p, 3)
    conv_bn_seq(s, "diff4", 8 * p, 2 * p, 3)
    # PAPPM(planes * 16, ppm_planes, planes * 4)
    cin = 16 * p
    pooled_scales(s, cin, ppm)
    bn_relu_conv(s, "spp.scale0", cin, ppm)
    bn_relu_conv(s, "spp.scale_process", 4 * ppm, 4 * ppm, 3, groups=4)
    bn_relu_conv(s, "spp.compression", 5 * ppm, 4 * p)
    bn_relu_conv(s, "spp.shortcut", cin, 4 * p)
    conv_bn_seq(s, "dfm.conv_p", 4 * p, 4 * p, 1)  # Light_Bag
    conv_bn_seq(s, "dfm.conv_i", 4 * p, 4 * p, 1)
    make_layer(s, "layer5_d", "bottleneck", 2 * p, 2 * p, 1)
    segmenthead(s, "seghead_p", 2 * p, head, num_classes)
    segmenthead(s, "seghead_d", 2 * p, p, 1)
    segmenthead(s, "final_layer", 4 * p, head, num_classes)
    return s


# ---------------------------------------------------------------- BiSeNetV2 (CoinCheung)


def cbr(s: Spec, name: str, cin: int, cout: int, k: int = 3, groups: int = 1) -> None:
    """``ConvBNReLU``: ``conv`` (no bias) and ``bn``."""
    conv(s, f"{name}.conv", cin, cout, k, groups)
    bn(s, f"{name}.bn", cout)


def ge_s1(s: Spec, name: str, c: int, e: int = 6) -> None:
    cbr(s, f"{name}.conv1", c, c)
    conv(s, f"{name}.dwconv.0", c, c * e, 3, groups=c)
    bn(s, f"{name}.dwconv.1", c * e)
    conv(s, f"{name}.conv2.0", c * e, c, 1)
    bn(s, f"{name}.conv2.1", c)


def ge_s2(s: Spec, name: str, cin: int, cout: int, e: int = 6) -> None:
    mid = cin * e
    cbr(s, f"{name}.conv1", cin, cin)
    conv(s, f"{name}.dwconv1.0", cin, mid, 3, groups=cin)
    bn(s, f"{name}.dwconv1.1", mid)
    conv(s, f"{name}.dwconv2.0", mid, mid, 3, groups=mid)
    bn(s, f"{name}.dwconv2.1", mid)
    conv(s, f"{name}.conv2.0", mid, cout, 1)
    bn(s, f"{name}.conv2.1", cout)
    conv(s, f"{name}.shortcut.0", cin, cin, 3, groups=cin)
    bn(s, f"{name}.shortcut.1", cin)
    conv(s, f"{name}.shortcut.2", cin, cout, 1)
    bn(s, f"{name}.shortcut.3", cout)


def segment_head(s: Spec, name: str, cin: int, mid: int, n: int, up: int, aux: bool) -> None:
    cbr(s, f"{name}.conv", cin, mid)
    mid2 = up * up if aux else mid
    if aux:
        cbr(s, f"{name}.conv_out.0.1", mid, mid2)
    conv(s, f"{name}.conv_out.1", mid2, n, 1, bias=True)


def bisenetv2(num_classes: int = 19) -> Spec:
    s: Spec = {}
    for name, cin, cout in [
        ("S1.0", 3, 64), ("S1.1", 64, 64),
        ("S2.0", 64, 64), ("S2.1", 64, 64), ("S2.2", 64, 64),
        ("S3.0", 64, 128), ("S3.1", 128, 128), ("S3.2", 128, 128),
    ]:  # fmt: skip
        cbr(s, f"detail.{name}", cin, cout)
    cbr(s, "segment.S1S2.conv", 3, 16)
    cbr(s, "segment.S1S2.left.0", 16, 8, 1)
    cbr(s, "segment.S1S2.left.1", 8, 16)
    cbr(s, "segment.S1S2.fuse", 32, 16)
    ge_s2(s, "segment.S3.0", 16, 32)
    ge_s1(s, "segment.S3.1", 32)
    ge_s2(s, "segment.S4.0", 32, 64)
    ge_s1(s, "segment.S4.1", 64)
    ge_s2(s, "segment.S5_4.0", 64, 128)
    for i in (1, 2, 3):
        ge_s1(s, f"segment.S5_4.{i}", 128)
    bn(s, "segment.S5_5.bn", 128)  # CEBlock
    cbr(s, "segment.S5_5.conv_gap", 128, 128, 1)
    cbr(s, "segment.S5_5.conv_last", 128, 128)
    conv(s, "bga.left1.0", 128, 128, 3, groups=128)
    bn(s, "bga.left1.1", 128)
    conv(s, "bga.left1.2", 128, 128, 1)
    conv(s, "bga.left2.0", 128, 128, 3)
    bn(s, "bga.left2.1", 128)
    conv(s, "bga.right1.0", 128, 128, 3)
    bn(s, "bga.right1.1", 128)
    conv(s, "bga.right2.0", 128, 128, 3, groups=128)
    bn(s, "bga.right2.1", 128)
    conv(s, "bga.right2.2", 128, 128, 1)
    conv(s, "bga.conv.0", 128, 128, 3)
    bn(s, "bga.conv.1", 128)
    segment_head(s, "head", 128, 1024, num_classes, 8, aux=False)
    for name, cin, up in [("aux2", 16, 4), ("aux3", 32, 8), ("aux4", 64, 16), ("aux5_4", 128, 32)]:
        segment_head(s, name, cin, 128, num_classes, up, aux=True)
    return s


# ---------------------------------------------------------------- RegSeg (RolandGao)


def cba(s: Spec, name: str, cin: int, cout: int, k: int) -> None:
    """``ConvBnAct``: ``conv`` (no bias) and ``bn``."""
    conv(s, f"{name}.conv", cin, cout, k)
    bn(s, f"{name}.bn", cout)


def dblock(s: Spec, name: str, cin: int, cout: int, dilations: list[int], stride: int, gw: int = 16) -> None:
    conv(s, f"{name}.conv1", cin, cout, 1)
    bn(s, f"{name}.bn1", cout)
    if len(dilations) == 1:
        conv(s, f"{name}.conv2", cout, cout, 3, groups=cout // gw)
    else:
        part = cout // len(dilations)
        for i in range(len(dilations)):
            conv(s, f"{name}.conv2.convs.{i}", part, part, 3, groups=part // gw)
    bn(s, f"{name}.bn2", cout)
    conv(s, f"{name}.conv3", cout, cout, 1)
    bn(s, f"{name}.bn3", cout)
    conv(s, f"{name}.se.conv1", cout, cin // 4, 1, bias=True)
    conv(s, f"{name}.se.conv2", cin // 4, cout, 1, bias=True)
    if stride != 1 or cin != cout:
        conv(s, f"{name}.shortcut.conv", cin, cout, 1)
        bn(s, f"{name}.shortcut.bn", cout)


def regseg(num_classes: int = 19) -> Spec:
    s: Spec = {}
    cba(s, "stem", 3, 32, 3)
    ds = [[1], [1, 2]] + 4 * [[1, 4]] + 7 * [[1, 14]]  # exp48
    dblock(s, "body.stage4", 32, 48, [1], 2)
    dblock(s, "body.stage8.0", 48, 128, [1], 2)
    dblock(s, "body.stage8.1", 128, 128, [1], 1)
    dblock(s, "body.stage8.2", 128, 128, [1], 1)
    dblock(s, "body.stage16.0", 128, 256, [1], 2)
    for i, d in enumerate(ds[:-1], start=1):
        dblock(s, f"body.stage16.{i}", 256, 256, d, 1)
    dblock(s, f"body.stage16.{len(ds)}", 256, 320, ds[-1], 1)
    cba(s, "decoder.head16", 320, 128, 1)  # Exp2_Decoder26
    cba(s, "decoder.head8", 128, 128, 1)
    cba(s, "decoder.head4", 48, 8, 1)
    cba(s, "decoder.conv8", 128, 64, 3)
    cba(s, "decoder.conv4", 64 + 8, 64, 3)
    conv(s, "decoder.classifier", 64, num_classes, 1, bias=True)
    return s


SPECS = {
    "ddrnet23_slim": (ddrnet23_slim, "ydhongHIT/DDRNet segmentation/DDRNet_23_slim.py (augment=True)"),
    "ddrnet23_slim_imagenet": (
        ddrnet23_slim_imagenet,
        "ydhongHIT/DDRNet classification/DDRNet_23_slim.py (get_model(): planes=32, last_planes=1024)",
    ),
    "pidnet_s": (
        pidnet_s,
        "XuJiacong/PIDNet models/pidnet.py + models/model_utils.py (pidnet_s, augment=True)",
    ),
    "bisenetv2": (bisenetv2, "CoinCheung/BiSeNet lib/models/bisenetv2.py (aux_mode='train')"),
    "regseg": (regseg, "RolandGao/RegSeg model.py + blocks.py (exp48_decoder26)"),
}


def main() -> None:
    here = Path(__file__).resolve().parent
    for name, (fn, source) in SPECS.items():
        spec = fn() if name.endswith("imagenet") else fn(19)
        params = sum(
            int(math.prod(shape))
            for key, shape in spec.items()
            if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))
        )
        classes = 1000 if name.endswith("imagenet") else 19
        out = {"source": source, "num_classes": classes, "parameters": params, "tensors": spec}
        (here / f"official_{name}.json").write_text(json.dumps(out, indent=0) + "\n", encoding="utf-8")
        print(f"official_{name}.json: {len(spec)} tensors, {params:,} parameters")


if __name__ == "__main__":
    main()
