"""The official networks' inference function, computed straight from an official state dict.

One function per model, ``forward(state, x) -> logits``: ``state`` is a checkpoint of the
official repository under its own names (wrapper prefixes removed, see
:func:`effseg.models.official.keymaps.convert_official`), ``x`` a normalised image batch
(B, 3, H, W) with H and W multiples of 64 (32 for BiSeNetV2: the official code resizes to ``H // 8``
and upsamples by fixed factors), and the result the logits (B, C, H, W) after the official
recipe's final resize.  Written with ``torch.nn.functional`` only, from reading the official model
code (ydhongHIT/DDRNet, XuJiacong/PIDNet, CoinCheung/BiSeNet, RolandGao/RegSeg), in eval mode
(BatchNorm with running statistics, no dropout); it imports nothing of effseg's networks, so it
is an independent check that effseg with converted weights computes the official function:
``python -m effseg.models.official FILE --model NAME``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["REFERENCES", "reference_forward"]

State = Mapping[str, Tensor]


def _conv(s: State, name: str, x: Tensor, stride: int = 1, dilation: int = 1) -> Tensor:
    w = s[f"{name}.weight"]
    k = w.shape[-1]
    groups = x.shape[1] // w.shape[1]
    pad = dilation * (k - 1) // 2
    return F.conv2d(x, w, s.get(f"{name}.bias"), stride, pad, dilation, groups)


def _bn(s: State, name: str, x: Tensor) -> Tensor:
    return F.batch_norm(
        x,
        s[f"{name}.running_mean"],
        s[f"{name}.running_var"],
        s[f"{name}.weight"],
        s[f"{name}.bias"],
        False,
        0.0,
        1e-5,
    )


def _up(x: Tensor, size: tuple[int, int] | torch.Size, align_corners: bool = False) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


# ---------------------------------------------------------------- DDRNet and PIDNet


def _block(s: State, name: str, x: Tensor, stride: int, no_relu: bool) -> Tensor:
    """BasicBlock or Bottleneck (the file says which: ``conv3`` present), downsample when present."""
    residual = x
    if f"{name}.downsample.0.weight" in s:
        residual = _bn(s, f"{name}.downsample.1", _conv(s, f"{name}.downsample.0", x, stride))
    if f"{name}.conv3.weight" in s:
        out = F.relu(_bn(s, f"{name}.bn1", _conv(s, f"{name}.conv1", x)))
        out = F.relu(_bn(s, f"{name}.bn2", _conv(s, f"{name}.conv2", out, stride)))
        out = _bn(s, f"{name}.bn3", _conv(s, f"{name}.conv3", out))
    else:
        out = F.relu(_bn(s, f"{name}.bn1", _conv(s, f"{name}.conv1", x, stride)))
        out = _bn(s, f"{name}.bn2", _conv(s, f"{name}.conv2", out))
    out = out + residual
    return out if no_relu else F.relu(out)


def _layer(s: State, name: str, x: Tensor, stride: int = 1) -> Tensor:
    """``_make_layer``: the first block strides (a bottleneck's first block has no final ReLU),
    the last of two or more has none, the others do."""
    n = len({k.split(".")[1] for k in s if k.startswith(f"{name}.")})
    for i in range(n):
        first_bottleneck = i == 0 and f"{name}.0.conv3.weight" in s
        x = _block(s, f"{name}.{i}", x, stride if i == 0 else 1, first_bottleneck or (i == n - 1 and n > 1))
    return x


def _stem(s: State, x: Tensor) -> Tensor:
    x = F.relu(_bn(s, "conv1.1", _conv(s, "conv1.0", x, 2)))
    return F.relu(_bn(s, "conv1.4", _conv(s, "conv1.3", x, 2)))


def _conv_bn(s: State, name: str, x: Tensor, stride: int = 1) -> Tensor:
    return _bn(s, f"{name}.1", _conv(s, f"{name}.0", x, stride))


def _bn_relu_conv(s: State, name: str, x: Tensor) -> Tensor:
    return _conv(s, f"{name}.2", F.relu(_bn(s, f"{name}.0", x)))


def _pooled(s: State, k: int, x: Tensor) -> Tensor:
    """``spp.scaleK``: average pool (5/2, 9/4, 17/8, global), then BatchNorm, ReLU, 1x1 conv."""
    if k == 4:
        p = F.adaptive_avg_pool2d(x, 1)
    else:
        kernel = {1: 5, 2: 9, 3: 17}[k]
        p = F.avg_pool2d(x, kernel, kernel // 2, kernel // 2)
    return _conv(s, f"spp.scale{k}.3", F.relu(_bn(s, f"spp.scale{k}.1", p)))


def _segmenthead(s: State, name: str, x: Tensor) -> Tensor:
    x = _conv(s, f"{name}.conv1", F.relu(_bn(s, f"{name}.bn1", x)))
    return _conv(s, f"{name}.conv2", F.relu(_bn(s, f"{name}.bn2", x)))


def ddrnet(s: State, x: Tensor) -> Tensor:
    """DDRNet-23(-slim) ``DualResNet.forward`` + bilinear resize (``align_corners=False``)."""
    size = x.shape[-2:]
    out_hw = (size[0] // 8, size[1] // 8)
    x = _layer(s, "layer1", _stem(s, x))
    l2 = _layer(s, "layer2", F.relu(x), 2)
    l3 = _layer(s, "layer3", F.relu(l2), 2)
    hi = _layer(s, "layer3_", F.relu(l2))
    lo = l3 + _conv_bn(s, "down3", F.relu(hi), 2)
    hi = hi + _up(_conv_bn(s, "compression3", F.relu(l3)), out_hw)
    l4 = _layer(s, "layer4", F.relu(lo), 2)
    hi = _layer(s, "layer4_", F.relu(hi))
    d4 = _bn(
        s, "down4.4", _conv(s, "down4.3", F.relu(_bn(s, "down4.1", _conv(s, "down4.0", F.relu(hi), 2))), 2)
    )
    lo = l4 + d4
    hi = hi + _up(_conv_bn(s, "compression4", F.relu(l4)), out_hw)
    hi = _layer(s, "layer5_", F.relu(hi))
    x5 = _layer(s, "layer5", F.relu(lo), 2)
    # DAPPM: hierarchical fusion of the pooled scales
    feats = [_bn_relu_conv(s, "spp.scale0", x5)]
    for k in (1, 2, 3, 4):
        feats.append(
            _conv(
                s,
                f"spp.process{k}.2",
                F.relu(_bn(s, f"spp.process{k}.0", _up(_pooled(s, k, x5), x5.shape[-2:]) + feats[-1])),
            )
        )
    spp = _bn_relu_conv(s, "spp.compression", torch.cat(feats, 1)) + _bn_relu_conv(s, "spp.shortcut", x5)
    out = _segmenthead(s, "final_layer", _up(spp, out_hw) + hi)
    return _up(out, size)


def _pag(s: State, name: str, p: Tensor, i: Tensor) -> Tensor:
    size = p.shape[-2:]
    y_q = _up(_conv_bn(s, f"{name}.f_y", i), size)
    sim = torch.sigmoid((_conv_bn(s, f"{name}.f_x", p) * y_q).sum(dim=1, keepdim=True))
    return (1 - sim) * p + sim * _up(i, size)


def pidnet(s: State, x: Tensor) -> Tensor:
    """PIDNet-S/M ``PIDNet.forward`` (eval) + the recipe's bilinear resize with ``align_corners=True``."""
    size = x.shape[-2:]
    x = _layer(s, "layer1", _stem(s, x))
    x = F.relu(_layer(s, "layer2", F.relu(x), 2))
    p = _layer(s, "layer3_", x)
    d = _block(s, "layer3_d", x, 1, True)
    hw = d.shape[-2:]
    x = F.relu(_layer(s, "layer3", x, 2))
    p = _pag(s, "pag3", p, _conv_bn(s, "compression3", x))
    d = d + _up(_conv_bn(s, "diff3", x), hw)
    x = F.relu(_layer(s, "layer4", x, 2))
    p = _layer(s, "layer4_", F.relu(p))
    d = _layer(s, "layer4_d", F.relu(d))
    p = _pag(s, "pag4", p, _conv_bn(s, "compression4", x))
    d = d + _up(_conv_bn(s, "diff4", x), hw)
    p = _layer(s, "layer5_", F.relu(p))
    d = _layer(s, "layer5_d", F.relu(d))
    x5 = _layer(s, "layer5", x, 2)
    # PAPPM: every pooled scale plus scale0, refined together by one grouped conv
    x0 = _bn_relu_conv(s, "spp.scale0", x5)
    scales = torch.cat([_up(_pooled(s, k, x5), x5.shape[-2:]) + x0 for k in (1, 2, 3, 4)], 1)
    scales = _bn_relu_conv(s, "spp.scale_process", scales)
    i = _bn_relu_conv(s, "spp.compression", torch.cat([x0, scales], 1)) + _bn_relu_conv(s, "spp.shortcut", x5)
    i = _up(i, hw)
    edge = torch.sigmoid(d)  # light Bag
    fused = _conv_bn(s, "dfm.conv_p", (1 - edge) * i + p) + _conv_bn(s, "dfm.conv_i", i + edge * p)
    return _up(_segmenthead(s, "final_layer", fused), size, align_corners=True)


# ---------------------------------------------------------------- BiSeNetV2 (CoinCheung)


def _cbr(s: State, name: str, x: Tensor, stride: int = 1) -> Tensor:
    return F.relu(_bn(s, f"{name}.bn", _conv(s, f"{name}.conv", x, stride)))


def _ge(s: State, name: str, x: Tensor) -> Tensor:
    feat = _cbr(s, f"{name}.conv1", x)
    if f"{name}.dwconv1.0.weight" in s:  # GELayerS2
        feat = _bn(s, f"{name}.dwconv1.1", _conv(s, f"{name}.dwconv1.0", feat, 2))
        feat = F.relu(_bn(s, f"{name}.dwconv2.1", _conv(s, f"{name}.dwconv2.0", feat)))
        feat = _bn(s, f"{name}.conv2.1", _conv(s, f"{name}.conv2.0", feat))
        short = _bn(s, f"{name}.shortcut.1", _conv(s, f"{name}.shortcut.0", x, 2))
        short = _bn(s, f"{name}.shortcut.3", _conv(s, f"{name}.shortcut.2", short))
        return F.relu(feat + short)
    feat = F.relu(_bn(s, f"{name}.dwconv.1", _conv(s, f"{name}.dwconv.0", feat)))
    return F.relu(_bn(s, f"{name}.conv2.1", _conv(s, f"{name}.conv2.0", feat)) + x)


def bisenetv2(s: State, x: Tensor) -> Tensor:
    """BiSeNetV2 ``forward`` (``aux_mode='eval'``): detail and semantic branches, BGA, head (x8 bilinear)."""
    d = x
    for stage, strides in (("S1", (2, 1)), ("S2", (2, 1, 1)), ("S3", (2, 1, 1))):
        for i, st in enumerate(strides):
            d = _cbr(s, f"detail.{stage}.{i}", d, st)
    feat = _cbr(s, "segment.S1S2.conv", x, 2)
    left = _cbr(s, "segment.S1S2.left.1", _cbr(s, "segment.S1S2.left.0", feat), 2)
    sem = _cbr(s, "segment.S1S2.fuse", torch.cat([left, F.max_pool2d(feat, 3, 2, 1)], 1))
    for stage, n in (("S3", 2), ("S4", 2), ("S5_4", 4)):
        for i in range(n):
            sem = _ge(s, f"segment.{stage}.{i}", sem)
    ce = _cbr(s, "segment.S5_5.conv_gap", _bn(s, "segment.S5_5.bn", sem.mean(dim=(2, 3), keepdim=True)))
    sem = _cbr(s, "segment.S5_5.conv_last", ce + sem)
    left1 = _conv(s, "bga.left1.2", _bn(s, "bga.left1.1", _conv(s, "bga.left1.0", d)))
    left2 = F.avg_pool2d(_bn(s, "bga.left2.1", _conv(s, "bga.left2.0", d, 2)), 3, 2, 1)
    right1 = F.interpolate(
        _bn(s, "bga.right1.1", _conv(s, "bga.right1.0", sem)), scale_factor=4.0, mode="nearest"
    )
    right2 = _conv(s, "bga.right2.2", _bn(s, "bga.right2.1", _conv(s, "bga.right2.0", sem)))
    right = F.interpolate(left2 * torch.sigmoid(right2), scale_factor=4.0, mode="nearest")
    agg = F.relu(_bn(s, "bga.conv.1", _conv(s, "bga.conv.0", left1 * torch.sigmoid(right1) + right)))
    logits = _conv(s, "head.conv_out.1", _cbr(s, "head.conv", agg))
    return F.interpolate(logits, scale_factor=8.0, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- RegSeg (RolandGao)

#: the stride-16 dilations of ``exp48`` (one entry per D block after the strided one).
EXP48 = [[1], [1, 2]] + 4 * [[1, 4]] + 7 * [[1, 14]]


def _dblock(s: State, name: str, x: Tensor, dilations: list[int], stride: int) -> Tensor:
    short = x
    if f"{name}.shortcut.conv.weight" in s:
        y = F.avg_pool2d(x, 2, 2, ceil_mode=True) if stride != 1 else x
        short = _bn(s, f"{name}.shortcut.bn", _conv(s, f"{name}.shortcut.conv", y))
    y = F.relu(_bn(s, f"{name}.bn1", _conv(s, f"{name}.conv1", x)))
    if len(dilations) == 1:
        y = _conv(s, f"{name}.conv2", y, stride, dilations[0])
    else:
        parts = torch.tensor_split(y, len(dilations), dim=1)
        y = torch.cat(
            [
                _conv(s, f"{name}.conv2.convs.{i}", t, stride, d)
                for i, (t, d) in enumerate(zip(parts, dilations, strict=True))
            ],
            1,
        )
    y = F.relu(_bn(s, f"{name}.bn2", y))
    se = F.relu(_conv(s, f"{name}.se.conv1", y.mean(dim=(2, 3), keepdim=True)))
    y = y * torch.sigmoid(_conv(s, f"{name}.se.conv2", se))
    y = _bn(s, f"{name}.bn3", _conv(s, f"{name}.conv3", y))
    return F.relu(y + short)


def _cba(s: State, name: str, x: Tensor, stride: int = 1) -> Tensor:
    return F.relu(_bn(s, f"{name}.bn", _conv(s, f"{name}.conv", x, stride)))


def regseg(s: State, x: Tensor) -> Tensor:
    """RegSeg ``exp48_decoder26``: stem, D-block body, Decoder26, bilinear resize (no align_corners)."""
    size = x.shape[-2:]
    x4 = _dblock(s, "body.stage4", _cba(s, "stem", x, 2), [1], 2)
    x8 = _dblock(s, "body.stage8.0", x4, [1], 2)
    for i in (1, 2):
        x8 = _dblock(s, f"body.stage8.{i}", x8, [1], 1)
    x16 = _dblock(s, "body.stage16.0", x8, [1], 2)
    for i, d in enumerate(EXP48, start=1):
        x16 = _dblock(s, f"body.stage16.{i}", x16, d, 1)
    h16, h8, h4 = _cba(s, "decoder.head16", x16), _cba(s, "decoder.head8", x8), _cba(s, "decoder.head4", x4)
    y8 = _cba(s, "decoder.conv8", h8 + _up(h16, h8.shape[-2:]))
    y4 = _cba(s, "decoder.conv4", torch.cat([_up(y8, h4.shape[-2:]), h4], 1))
    return _up(_conv(s, "decoder.classifier", y4), size)


#: effseg model name -> the official function.
REFERENCES: dict[str, Callable[[State, Tensor], Tensor]] = {
    "ddrnet23_slim": ddrnet,
    "pidnet_s": pidnet,
    "bisenetv2": bisenetv2,
    "regseg": regseg,
}


def reference_forward(name: str, state: State, x: Tensor) -> Tensor:
    """The official ``name`` network's logits (B, C, H, W) for ``x`` (B, 3, H, W), eval mode."""
    with torch.no_grad():
        return REFERENCES[name](state, x)
