"""``effseg eval MODEL``: mIoU table, eval.json, markdown, confusion matrix PNG.

``MODEL`` is anything :func:`effseg.deploy.artifact.load_artifact` takes: a run folder (its
final weights ``last.pt``; the output names the file, and labels a figure of the val-picked
``best.pt`` on its val split as optimistic), a ``.pt`` checkpoint, an ``.onnx`` file (run with
ONNX Runtime) or a shipped model name. The dataset comes from the config stored in the model (or
``--config``), with ``--set`` overrides, e.g. ``--set data.root=/data/cityscapes``; an ONNX file
needs ``--config`` unless its metadata carries one.

    effseg eval runs/pspnet_r18 --tta flip,0.75,1.0,1.25
    effseg eval runs/pspnet_r18/best.pt --mode slide --save-label-ids preds/
    effseg eval camvid-<model> --set data.root=/data/CamVid
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import warnings
from pathlib import Path

from effseg.cli._options import add_set_option, add_tta_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        metavar="MODEL",
        help="run folder (its last.pt), .pt checkpoint, .onnx file or shipped model name",
    )
    parser.add_argument("--split", help="dataset split (default: the config's data.val_split)")
    parser.add_argument(
        "--mode", choices=["whole", "slide"], help="inference mode (default: the config's eval.mode)"
    )
    add_tta_option(parser)
    parser.add_argument("--save-label-ids", metavar="DIR", help="write Cityscapes label-id PNGs (0..33) here")
    parser.add_argument(
        "--out", metavar="DIR", help="output folder (default: <run>/eval; eval/<name> for a shipped model)"
    )
    parser.add_argument(
        "--config", help="YAML config for the dataset (default: the one stored in the checkpoint)"
    )
    add_set_option(parser, "data.root=/data/cityscapes eval.resize=[512,1024]")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    parser.add_argument(
        "--runtime",
        choices=["eager", "compile-int8", "openvino"],
        default="eager",
        help="eager (default; an .onnx file: onnxruntime); compile-int8: PT2E int8 + torch.compile on the "
        "CPU, calibrated on --calib; openvino: the .onnx file (or the model exported at the eval size) "
        "compiled by OpenVINO at its default precision (bf16 on CPUs with AMX)",
    )
    parser.add_argument(
        "--calib",
        metavar="SPLIT_OR_DIR",
        help="compile-int8's calibration images: a split of the model's dataset (train) or a folder",
    )
    parser.add_argument("--num-workers", type=int, help="data loading workers (default: the config's)")


def run(args: argparse.Namespace) -> int:
    from effseg.config import load_config, stored_config
    from effseg.data import build_dataset, build_eval_transform
    from effseg.data.from_config import check_data_root, val_dataset_options
    from effseg.deploy.artifact import figure_note, load_artifact, trained_on_note, val_pick_note
    from effseg.engine import distributed as du
    from effseg.engine.evaluate import (
        eval_options,
        evaluate,
        parse_tta,
        print_eval_table,
        write_eval_outputs,
    )
    from effseg.errors import ConfigError
    from effseg.fileio import check_writable_dir

    path = Path(args.checkpoint)
    if args.calib and args.runtime != "compile-int8":
        raise ConfigError(f"--calib: calibration images are for --runtime compile-int8, not {args.runtime}")
    overrides = [item for group in args.overrides for item in group]
    info = du.init_distributed(args.device, what="--device")
    stack = contextlib.ExitStack()  # the openvino runtime's temporary export folder
    try:
        art = load_artifact(path, info.device)
        model, meta = art.model, art.meta
        out = _output_folder(args.out, art, path)
        if info.is_main:  # refused before the evaluation runs if unwritable; made only with the results
            check_writable_dir(out, "the evaluation results (--out DIR)")
        if args.config:
            cfg = load_config(args.config, overrides)
        elif meta.get("config"):
            cfg = stored_config(meta["config"], overrides, path)
        else:
            raise ConfigError(f"{path} carries no training config; pass --config CONFIG.yaml for the dataset")
        mean = meta.get("mean") or cfg.data.mean
        std = meta.get("std") or cfg.data.std
        check_data_root(cfg, (args.split or cfg.data.val_split,))  # shipped models carry no data root
        dataset = build_dataset(
            cfg.data.dataset,
            cfg.data.root,
            args.split or cfg.data.val_split,
            transform=build_eval_transform(mean=tuple(mean), std=tuple(std)),
            **val_dataset_options(cfg),
        )
        e = cfg.eval
        if args.runtime == "compile-int8":  # calibrated on the --calib split of this (overridden) config
            int8_meta = {**meta, "config": cfg.to_dict()}
            model = _compile_int8(model, int8_meta, dataset, e.resize, args.calib, path, art.is_onnx)
        elif args.runtime == "openvino":
            model = _openvino(art, {**meta, "config": cfg.to_dict()}, dataset, e.resize, stack)
        options = eval_options(e)  # the config's eval section; the flags given override it
        if args.tta is not None:
            options["scales"], options["flip"] = parse_tta(args.tta)
        if args.mode:
            options["mode"] = args.mode
        if args.num_workers is not None:
            options["num_workers"] = args.num_workers
        result = evaluate(
            model,
            dataset,
            **options,
            device="cpu" if art.is_onnx or args.runtime != "eager" else info.device,
            save_label_ids=args.save_label_ids,
        )
        if info.is_main:
            result["checkpoint"] = str(path)
            result["split"] = args.split or cfg.data.val_split
            result["weights"] = str(art.path or path)  # the file read (a run folder: last.pt)
            result["picked_on_val"] = val_pick_note(art.path, meta.get("config"), result["split"]) or None
            result["seen_in_training"] = trained_on_note(meta.get("config"), result["split"]) or None
            note = figure_note(art.path, meta.get("config"), result["split"])
            result["training"] = meta.get("training")  # steps, train/val seconds, time budget
            result["runtime"] = _runtime_record(args.runtime, args.calib, model)
            paths = write_eval_outputs(result, out)
            print_eval_table(result)
            print(f"weights: {result['weights']}" + (f" -- {note}" if note else ""))
            print(f"wrote {paths['json']}, {paths['markdown']}, {paths['confusion']}")
            if args.save_label_ids:
                print(f"label-id PNGs in {args.save_label_ids}")
    finally:
        stack.close()
        du.cleanup()
    return 0


def _output_folder(out: str | None, art, path: Path) -> Path:
    """``--out``, else ``eval/<name>`` for a shipped model (the package folder is not ours to write
    into), else ``eval/`` beside the run folder or checkpoint."""
    if out:
        return Path(out)
    if art.kind == "shipped":
        return Path("eval") / art.name
    return (path if path.is_dir() else path.parent) / "eval"


def _runtime_record(runtime: str, calib: str | None, model) -> str | dict:
    """eval.json's ``runtime``: ``eager``, or the runtime with what changes its numbers."""
    if runtime == "eager":
        return runtime
    if runtime == "openvino":
        size = model.static_size
        return {"name": runtime, "precision": model.precision, "input_size": list(size) if size else None}
    return {"name": runtime, "calibration": calib, "input_size": list(model.input_size)}


def _openvino(art, meta, dataset, resize, stack: contextlib.ExitStack):
    """``art`` run by OpenVINO: its own .onnx file, or the PyTorch model exported (fp32, static) at
    the size the evaluation feeds (``eval.resize`` or the first image's own size) into a folder
    that ``stack`` removes."""
    from effseg.deploy.export import export_onnx
    from effseg.deploy.runtime import load_onnx_model

    if art.is_onnx:
        return load_onnx_model(art.path, require_metadata=False, backend="openvino")[0]
    size = tuple(resize) if resize is not None else tuple(dataset.load_raw(0)[0].shape[:2])
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="effseg-openvino-")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        export_onnx(art.model.cpu().eval(), folder / "fp32.onnx", input_size=size, meta=meta)
    return load_onnx_model(folder / "fp32.onnx", backend="openvino")[0]


def _compile_int8(model, meta, dataset, resize, calib, path, is_onnx):
    """``model`` as PT2E int8 + inductor (:mod:`effseg.deploy.pt2e`), calibrated on ``calib`` at the
    size the evaluation feeds (``eval.resize`` or the first image's own size)."""
    import torch

    from effseg.deploy.export_run import calibration_arrays
    from effseg.deploy.pt2e import compile_int8
    from effseg.errors import ConfigError

    if is_onnx:
        raise ConfigError(f"{path}: --runtime compile-int8 quantizes a PyTorch model, not an ONNX file")
    if not calib:
        raise ConfigError(
            "--runtime compile-int8 needs --calib SPLIT_OR_DIR (e.g. train): images to calibrate on"
        )
    size = tuple(resize) if resize is not None else tuple(dataset.load_raw(0)[0].shape[:2])
    arrays, _ = calibration_arrays(calib, size, meta)
    return compile_int8(model.cpu(), [torch.from_numpy(a) for a in arrays])
