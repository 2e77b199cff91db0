"""The client daemon loop: join, then train whenever sampled, until the coordinator says it is finished.

Personal state (local prompts, fusion modules) is loaded from and saved to the client's own disk after
every round; only the global prompts are sent. SIGTERM stops cleanly at the next safe point.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import torch

from pfeddc.client.backbone import load_backbone
from pfeddc.client.connection import Backoff, Connection
from pfeddc.client.data import ClientData, classnames_for, load_client_data, scan
from pfeddc.client.model import PFedDCModel
from pfeddc.client.store import ClientStore
from pfeddc.client.train import Interrupted, TrainConfig, evaluate, pick_device, train_local
from pfeddc.common import serde
from pfeddc.common.logs import get_logger
from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.transport import TlsFiles

log = get_logger("client")


@dataclass(frozen=True)
class ClientOptions:
    data: Path
    server: str
    state_dir: Path
    model: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    local_epochs: int | None = None
    lr: float | None = None
    seed: int = 0
    client_id: str | None = None
    tls: TlsFiles = TlsFiles()
    token: str | None = None
    test_fraction: float = 0.2
    max_retries: int = 10
    allow_download: bool = False
    progress: bool = False


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _all_finite(loss: float, model: PFedDCModel) -> bool:
    """False when training blew up: a NaN loss or any non-finite prompt or fusion value (zero-shot: True)."""
    params = model.trainable_parameters()
    return not params or (not math.isnan(loss) and all(bool(torch.isfinite(p).all()) for p in params))


def prepare_data(store: ClientStore, opts: ClientOptions, image_size: int) -> ClientData:
    meta = store.meta()
    data, test_paths = load_client_data(opts.data, image_size, meta.get("test_split"), opts.test_fraction,
                                        opts.seed, opts.progress)
    store.save_meta({**store.meta(), "classnames": data.classnames, "test_split": test_paths,
                     "data": str(Path(opts.data).resolve())})
    return data


class ClientDaemon:
    def __init__(self, opts: ClientOptions, stop: threading.Event | None = None) -> None:
        self.opts = opts
        self.stop = stop or threading.Event()
        self.store = ClientStore(opts.state_dir)
        self.client_id = self.store.client_id(opts.client_id)
        self.device = pick_device(opts.device)

    def run(self) -> dict[str, Any]:
        opts = self.opts
        folders, _ = scan(Path(opts.data))  # layout and class-list errors surface before any connection attempt
        self.store.check_classes(classnames_for(Path(opts.data), folders))
        log.info("client_starting", client_id=self.client_id, state_dir=str(self.store.dir), server=opts.server,
                 device=str(self.device))
        conn = Connection(opts.server, self.client_id, opts.tls, opts.token,
                          Backoff(max_attempts=opts.max_retries))
        try:
            info = conn.federation()
            model_name = opts.model or info.model
            backbone = load_backbone(model_name, allow_download=opts.allow_download)
            data = prepare_data(self.store, opts, backbone.image_size)
            meta = self.store.meta()
            if meta.get("federation_id") not in (None, info.federation_id):
                log.warning("federation_changed", was=meta["federation_id"], now=info.federation_id,
                            advice="the local prompts of the earlier federation are kept; a changed prompt layout "
                                   "fails to load: use a new --state-dir then")
            seed = int.from_bytes(hashlib.sha256(f"{opts.seed}:{self.client_id}".encode()).digest()[:4], "big")
            model = PFedDCModel(backbone, data.classnames, info.prompt_config, seed=seed).to(self.device)
            local = self.store.load_local()
            if local is not None:
                model.load_state(local, "local")
                log.info("local_state_restored", client_id=self.client_id, round=meta.get("last_round"))
            self.store.save_meta({**self.store.meta(), "federation_id": info.federation_id, "model": model_name,
                                  "prompt_config": info.prompt_config.to_dict()})
            conn.join(len(data.train), model.spec)
            log.info("client_joined", client_id=self.client_id, num_examples=len(data.train),
                     classes=len(data.classnames), test_examples=len(data.test), total_rounds=info.total_rounds)
            return self._loop(conn, model, data)
        finally:
            conn.close()

    def _loop(self, conn: Connection, model: PFedDCModel, data: ClientData) -> dict[str, Any]:
        while not self.stop.is_set():
            try:
                task = conn.task()
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                    log.warning("rejoining", client_id=self.client_id, reason=exc.details())  # type: ignore[attr-defined]
                    conn.join(len(data.train), model.spec)
                    continue
                raise
            if task.action == pb.TaskReply.WAIT:
                self.stop.wait(max(0.05, task.retry_after_s))
            elif task.action == pb.TaskReply.TRAIN:
                try:
                    self._train_round(conn, model, data, task)
                except Interrupted:
                    break
            elif task.action == pb.TaskReply.FINISHED:
                return self._finish(model, data, task)
        log.info("client_stopped", client_id=self.client_id, reason="signal")
        return {"client_id": self.client_id, "stopped": True}

    def _load_global(self, model: PFedDCModel, task: pb.TaskReply) -> None:
        if serde.sha256(task.global_state) != task.global_sha256:
            raise ValueError(f"global prompts of round {task.round} failed their SHA-256 check")
        model.load_state(serde.decode(task.global_state), "global")

    def _train_round(self, conn: Connection, model: PFedDCModel, data: ClientData, task: pb.TaskReply) -> None:
        opts, s = self.opts, task.settings
        cfg = TrainConfig(epochs=opts.local_epochs or s.local_epochs, lr=opts.lr or s.lr,
                          batch_size=opts.batch_size or s.batch_size, seed=s.seed)
        self._load_global(model, task)
        log.info("round_training", client_id=self.client_id, round=task.round, epochs=cfg.epochs, lr=cfg.lr,
                 num_examples=len(data.train))
        started = time.monotonic()
        before = evaluate(model, data.test, self.device)
        last_good = model.local_state()
        torch.manual_seed(cfg.seed)
        loss = train_local(model, data.train, cfg, self.device, self.stop, opts.progress)
        if not _all_finite(loss, model):
            # Diverged: keep the personal state of the last good round and send nothing this round.
            model.load_state(last_good, "local")
            log.error("training_diverged", client_id=self.client_id, round=task.round, train_loss=loss,
                      advice="lower --lr; the local state of the previous round is kept")
            self.store.save_round(task.round, last_good, model.global_state(), {
                "round": task.round, "accepted": False, "reason": "training diverged", "time": time.time()})
            return
        after = evaluate(model, data.test, self.device)
        duration = time.monotonic() - started
        metrics = {"train_loss": _finite(loss), "accuracy_before": _finite(before), "accuracy_after": _finite(after),
                   "num_test_examples": len(data.test), "train_seconds": duration}
        global_state = model.global_state()
        accepted, reason = True, ""
        try:
            reply = conn.submit(task.round, serde.encode(global_state), len(data.train), metrics)
            log.info("update_sent", client_id=self.client_id, round=task.round, duplicate=reply.duplicate,
                     received=reply.received, expected=reply.expected)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED,  # type: ignore[attr-defined]
                              grpc.StatusCode.PERMISSION_DENIED):
                raise
            accepted, reason = False, str(exc.details())  # type: ignore[attr-defined]
            log.warning("update_refused", client_id=self.client_id, round=task.round,
                        code=exc.code().name, reason=reason)  # type: ignore[attr-defined]
        record = {"round": task.round, **metrics, "num_examples": len(data.train), "accepted": accepted,
                  "reason": reason, "time": time.time()}
        self.store.save_round(task.round, model.local_state(), global_state, record)
        log.info("round_done", client_id=self.client_id, round=task.round, accuracy_before=round(before, 4),
                 accuracy_after=round(after, 4), train_loss=round(loss, 4), duration_s=round(duration, 2))

    def _finish(self, model: PFedDCModel, data: ClientData, task: pb.TaskReply) -> dict[str, Any]:
        self._load_global(model, task)
        accuracy = evaluate(model, data.test, self.device)
        last = int(self.store.meta().get("last_round", 0))
        self.store.save_round(last, model.local_state(), model.global_state(), None)
        self.store.save_meta({**self.store.meta(), "final_accuracy": _finite(accuracy), "finished": True})
        summary = {"client_id": self.client_id, "rounds": task.total_rounds, "final_accuracy": round(accuracy, 4),
                   "test_examples": len(data.test), "rounds_trained": len(self.store.history())}
        log.info("federation_finished", **summary)
        return summary
