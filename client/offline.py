"""Use a client's personalized model without a coordinator: rebuild it from the state dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import align_to, load_client_data
from .folders import DataError, list_images
from .model.backbone import load_backbone, preprocess
from .model.images import ImageSet
from .model.prompts import PFedDCModel, StatePart
from .model.train import evaluate, pick_device, predict_proba
from .store import ClientStore, StateError


def load_personalized(state_dir: Path, model_override: str | None, device: torch.device) -> PFedDCModel:
    store = ClientStore(state_dir)
    meta = store.meta()
    if meta.prompt_config is None or meta.classnames is None or meta.model is None:
        raise StateError(f"{state_dir} holds no trained client state (run pfeddc-client with a coordinator first)")
    backbone = load_backbone(model_override or meta.model)
    model = PFedDCModel(backbone, list(meta.prompt_config.classes) or meta.classnames, meta.prompt_config)
    for which, tensors in ((StatePart.LOCAL, store.load_local()), (StatePart.GLOBAL, store.load_global())):
        if tensors is not None:
            model.load_state(tensors, which)
    return model.to(device).eval()


def predict_command(state_dir: Path, paths: list[Path], model: str | None, device_name: str) -> list[dict[str, Any]]:
    device = pick_device(device_name)
    net = load_personalized(state_dir, model, device)
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += list_images(path)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"no such image or directory: {path}")
    images = torch.from_numpy(np.stack([preprocess(f, net.backbone.image_size) for f in files])) if files else \
        torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
    probs = predict_proba(net, ImageSet(images, torch.zeros(len(images), dtype=torch.long)), device)
    best = probs.max(-1)
    return [{"path": str(f), "class": net.classnames[int(i)], "probability": round(float(p), 6)}
            for f, p, i in zip(files, best.values, best.indices, strict=True)]


def evaluate_command(state_dir: Path, data_dir: Path, model: str | None, device_name: str) -> dict[str, Any]:
    device = pick_device(device_name)
    net = load_personalized(state_dir, model, device)
    data, _ = load_client_data(data_dir, net.backbone.image_size, test_paths=[], progress=False)
    if net.cfg.classes:
        data = align_to(data, net.cfg.classes)
    if data.classnames != net.classnames:
        raise DataError(f"class folders of {data_dir} ({data.classnames}) differ from the model's ({net.classnames})")
    split = data.test if (Path(data_dir) / "test").is_dir() else data.train
    return {"accuracy": round(evaluate(net, split, device), 6), "num_examples": len(split),
            "skipped": data.skipped, "data": str(data_dir)}

