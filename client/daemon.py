"""The client daemon loop: join, then train whenever sampled, until the coordinator says it is finished.

Personal state (local prompts, fusion modules) is loaded from and saved to the client's own disk after
every round; only the global prompts are sent. SIGTERM stops cleanly at the next safe point.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from pathlib import Path
from typing import Any

from ..common import serde
from ..common.logs import Event, get_logger
from ..common.messages import (
    MAX_HOLD_S,
    Action,
    Code,
    FailureReason,
    FederationInfo,
    Metrics,
    Refused,
    Task,
    TrainSettings,
)
from ..common.secagg.identity import site_signing
from ..common.spec import PromptConfig, TensorSpec, global_spec
from .connection import Backoff, Connection, global_tensors
from .data import ClientData, align_to, load_client_data
from .folders import DataError, classnames_for, scan
from .heartbeat import Heartbeat
from .model.backbone import load_backbone
from .model.classnames import ADVICE, check_class_names
from .model.prompts import PFedDCModel, StatePart
from .model.train import Interrupted, evaluate, pick_device
from .options import ClientOptions
from .peer_keys import PinnedKeys
from .secure import contribute
from .store import ClientStore, RoundRecord
from .trainer import LocalTrainer

log = get_logger("client")
# Refusals that end the daemon (credentials or the coordinator itself); any other refusal of an update is
# logged and the client asks for its next task.
FATAL = (Code.UNAVAILABLE, Code.UNAUTHENTICATED, Code.PERMISSION_DENIED)
CLASS_POLL_S = 2.0  # how often a site asks whether the coordinator fixed its class list


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


class ClientDaemon:
    def __init__(self, opts: ClientOptions, stop: threading.Event | None = None) -> None:
        self.opts = opts
        self.stop = stop or threading.Event()
        self.store = ClientStore(opts.state_dir)
        self.client_id = self.store.client_id(opts.client_id, opts.client_id_source)
        self.device = pick_device(opts.device)
        # secure rounds are signed: with a client certificate (peers checked against the CA), else with the key the
        # Join binds (peers checked against the keys pinned when first seen, read afresh each round)
        self.signing_key = self.store.signing_key()
        self.pins = self.store.peer_keys()  # a damaged pins file is named now, not at the first secure round
        self.certificate, self.ca = site_signing(opts.tls.cert, opts.tls.key, opts.tls.ca)

    def run(self) -> dict[str, Any]:
        opts = self.opts
        folders, _ = scan(Path(opts.data))  # layout and class-list errors surface before any connection attempt
        classnames = classnames_for(Path(opts.data), folders)
        self.store.check_classes(classnames)
        self.classnames = tuple(classnames)  # as this site names them (told only a coordinator that gathers them)
        log.info(Event.CLIENT_STARTING, client_id=self.client_id, state_dir=str(self.store.dir), server=opts.server,
                 device=str(self.device))
        conn = Connection(opts.server, self.client_id, opts.tls, opts.token, Backoff(max_attempts=opts.max_retries),
                          stop=self.stop, join_secret=self.store.join_secret(), signing_key=self.signing_key)
        try:
            info = conn.federation()
            model_name = opts.model or info.model
            backbone = load_backbone(model_name, allow_download=opts.allow_download)
            for pair in check_class_names(backbone, classnames):  # identical names stop here, before training
                log.warning(Event.CLASS_NAMES_SIMILAR, first=pair.first, second=pair.second, cosine=pair.cosine,
                            advice=f"the model can barely tell these classes apart by name: {ADVICE}")
            data = self._prepare_data(backbone.image_size)
            if info.classes_pending:  # the coordinator gathers its class list from the sites' Joins
                agreed = self._wait_for_classes(conn, info, global_spec(backbone.dims, info.prompt_config),
                                                tuple(classnames), len(data.train))
                if agreed is None:
                    log.info(Event.CLIENT_STOPPED, client_id=self.client_id, reason="signal")
                    return {"client_id": self.client_id, "stopped": True}
                info = agreed
            if info.prompt_config.classes:  # the federation names its classes: label by its list
                data = align_to(data, info.prompt_config.classes)
            meta = self.store.meta()
            if meta.federation_id not in (None, info.federation_id):
                log.warning(Event.FEDERATION_CHANGED, was=meta.federation_id, now=info.federation_id,
                            advice="the local prompts of the earlier federation are kept; a changed prompt layout "
                                   "fails to load: use a new --state-dir then")
            seed = int.from_bytes(hashlib.sha256(f"{opts.seed}:{self.client_id}".encode()).digest()[:4], "big")
            model = PFedDCModel(backbone, data.classnames, info.prompt_config, seed=seed).to(self.device)
            local = self.store.load_local()
            if local is not None:
                self._check_class_list(meta.prompt_config, info.prompt_config)
                model.load_state(local, StatePart.LOCAL)
                log.info(Event.LOCAL_STATE_RESTORED, client_id=self.client_id, round=meta.last_round)
                if model.head is not None and meta.federation_id not in (None, info.federation_id):
                    model.head.reset_personal()  # fitted against the earlier federation's head
            self.store.update_meta(federation_id=info.federation_id, model=model_name,
                                   prompt_config=info.prompt_config)
            conn.join(len(data.train), model.spec)
            log.info(Event.CLIENT_JOINED, client_id=self.client_id, num_examples=len(data.train),
                     classes=len(data.classnames), test_examples=len(data.test), total_rounds=info.total_rounds)
            with Heartbeat(conn, self.stop) as beat:
                return self._loop(conn, model, data, beat)
        finally:
            conn.close()

    def _wait_for_classes(self, conn: Connection, info: FederationInfo, spec: list[TensorSpec],
                          classnames: tuple[str, ...], num_examples: int) -> FederationInfo | None:
        """Join with this site's class names, then ask until the coordinator fixed the federation's list (as its
        first round opens), sending heartbeats meanwhile so it counts this site as online. None: stopped."""
        conn.join(num_examples, spec, classnames)
        log.info(Event.WAITING_FOR_CLASSES, client_id=self.client_id, classes=list(classnames),
                 advice="the coordinator fixes its class list from the sites that joined when its first round opens")
        with Heartbeat(conn, self.stop):
            while info.classes_pending:
                if self.stop.wait(CLASS_POLL_S):
                    return None
                info = conn.federation()
        return info

    def _check_class_list(self, saved: PromptConfig | None, now: PromptConfig) -> None:
        """Local class rows are indexed by the federation's class list: another list would mislabel them."""
        if saved is not None and saved.classes != now.classes:
            raise DataError(f"the federation's class list changed ({list(saved.classes)} -> {list(now.classes)}) "
                            f"but the local state in {self.store.dir} is indexed by the old one: start this client "
                            "with a new --state-dir (its class embeddings start again from its images)")

    def _prepare_data(self, image_size: int) -> ClientData:
        opts = self.opts
        data, test_paths = load_client_data(opts.data, image_size, self.store.meta().test_split, opts.test_fraction,
                                            opts.seed, opts.progress_bars())
        self.store.update_meta(classnames=data.classnames, test_split=test_paths, data=str(Path(opts.data).resolve()))
        return data

    def _loop(self, conn: Connection, model: PFedDCModel, data: ClientData, beat: Heartbeat) -> dict[str, Any]:
        trainer = LocalTrainer(model, data.train, data.test, self.device, self.store.meta().lr_scale, self.stop,
                               self.opts.progress_bars())
        task: Task | None = None
        while not self.stop.is_set():
            if task is None:
                try:
                    task = conn.task(wait_s=MAX_HOLD_S)  # held by the coordinator until there is something to do
                except Refused as exc:
                    if exc.code != Code.NOT_FOUND:
                        raise
                    log.warning(Event.REJOINING, client_id=self.client_id, reason=exc.message)
                    conn.join(len(data.train), model.spec)
                    continue
            if task.action == Action.FINISHED:
                return self._finish(model, data, task)
            if task.action == Action.WAIT:
                self.stop.wait(task.retry_after_s)
                task = None
                continue
            beat.round = task.round
            try:
                task = self._train_round(conn, trainer, data, task)
            except Interrupted:
                break
            finally:
                beat.round = 0
        log.info(Event.CLIENT_STOPPED, client_id=self.client_id, reason="signal")
        return {"client_id": self.client_id, "stopped": True}

    def _train_round(self, conn: Connection, trainer: LocalTrainer, data: ClientData, task: Task) -> Task | None:
        """Train, then submit (or report why not); returns the next task when the coordinator sent it along."""
        settings = (task.settings or TrainSettings()).with_overrides(**self.opts.overrides)
        log.info(Event.ROUND_TRAINING, client_id=self.client_id, round=task.round, epochs=settings.local_epochs,
                 lr=settings.lr, lr_scale=trainer.lr_scale, num_examples=len(data.train))
        measure = task.round % max(1, self.opts.eval_every) == 0 or task.round == task.total_rounds
        outcome = trainer.run(global_tensors(task), settings, measure, round_=task.round)
        model = trainer.model
        if outcome.tensors is None:
            # the state on disk first (the previous round's), then the word: a kill after the log loses nothing
            self.store.save_round(task.round, model.local_state(), model.global_state(), RoundRecord(
                task.round, False, outcome.failure or "", len(data.train), outcome.metrics, time.time()))
            self.store.update_meta(lr_scale=trainer.lr_scale)
            event = Event.TRAINING_DIVERGED if outcome.reason == FailureReason.DIVERGED else Event.TRAINING_COLLAPSED
            log.warning(event, client_id=self.client_id, round=task.round, reason=outcome.failure,
                        lr_scale=trainer.lr_scale, advice="this round's work is discarded and reported; the client "
                        "keeps its previous state and trains its next rounds at the lower learning rate")
            try:
                conn.report_failure(task.round, outcome.reason, outcome.failure or "")
            except Refused as exc:  # the round moved on meanwhile: nothing is waiting for this client
                if exc.code in FATAL:
                    raise
                log.warning(Event.UPDATE_REFUSED, client_id=self.client_id, round=task.round, code=str(exc.code),
                            reason=exc.message)
            return None
        update = serde.Encoded.of(outcome.tensors)  # once: sent, then saved from the same bytes
        accepted, reason, following = self._send(conn, task, update, len(data.train), outcome.metrics, model.spec)
        m = outcome.metrics
        record = RoundRecord(task.round, accepted, reason, len(data.train), m, time.time(), outcome.update_norms)
        self.store.save_round(task.round, model.local_state(), update, record)
        log.info(Event.ROUND_DONE, client_id=self.client_id, round=task.round,
                 accuracy_global=round(m.accuracy_global, 4), accuracy_after=round(m.accuracy_after, 4),
                 train_loss=round(m.train_loss, 4),
                 update_norms=outcome.update_norms, duration_s=round(m.train_seconds, 2))
        return following

    def _peer_keys(self) -> PinnedKeys:
        """The pins as the file holds them now (an operator's edit counts from the next round); the last good ones
        when it cannot be read mid-run (an editor writing it), said in a warning."""
        try:
            self.pins = self.store.peer_keys()
        except (OSError, ValueError) as exc:
            log.warning(Event.PEER_KEYS_UNREADABLE, client_id=self.client_id, error=str(exc),
                        advice="fix the file: this round checks the peers against the pins read before")
        return self.pins

    def _send(self, conn: Connection, task: Task, update: serde.Encoded, num_examples: int, metrics: Metrics,
              spec: list[TensorSpec]) -> tuple[bool, str, Task | None]:
        """Submit the update (or, in a secure federation, its masked change): accepted, why not, the next task."""
        try:
            if task.secure is not None:  # the coordinator learns only the round's sum
                pins = self._peer_keys() if self.certificate is None else None
                try:
                    counted = contribute(conn, task.secure, task.round, global_tensors(task), update.tensors, spec,
                                         num_examples, self.stop, self.certificate or self.signing_key,
                                         self.ca if self.certificate else pins)
                finally:
                    if pins is not None:
                        pins.remember()  # the peers first seen this round, checked
                return counted.committed, counted.reason, counted.next_task
            reply = conn.submit(task.round, update, num_examples, metrics, next_task_wait_s=MAX_HOLD_S)
            log.info(Event.UPDATE_SENT, client_id=self.client_id, round=task.round, duplicate=reply.duplicate,
                     received=reply.received, expected=reply.expected)
            return True, "", reply.next_task
        except Refused as exc:
            if exc.code in FATAL:
                raise
            log.warning(Event.UPDATE_REFUSED, client_id=self.client_id, round=task.round, code=str(exc.code),
                        reason=exc.message)
            return False, exc.message, None

    def _finish(self, model: PFedDCModel, data: ClientData, task: Task) -> dict[str, Any]:
        model.load_state(global_tensors(task), StatePart.GLOBAL)
        accuracy = evaluate(model, data.test, self.device)
        self.store.save_round(self.store.meta().last_round, model.local_state(), model.global_state(), None)
        self.store.update_meta(final_accuracy=_finite(accuracy), finished=True)
        summary = {"client_id": self.client_id, "rounds": task.total_rounds, "final_accuracy": round(accuracy, 4),
                   "test_examples": len(data.test), "rounds_trained": len(self.store.history())}
        log.info(Event.FEDERATION_FINISHED, **summary)
        return summary
