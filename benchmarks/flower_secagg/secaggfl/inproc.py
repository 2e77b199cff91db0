"""Drive the app's real ServerApp and ClientApp in one process, without Flower's transport, for large N.

    python -m secaggfl.inproc --nodes 100 --rounds 3 [--secagg] --times-file out.jsonl

A Grid that hands each message to the ClientApp of its node, in turn: every message and reply is copied as
Flower 1.42 ships it (each object deflated, then inflated from those bytes), so no state is shared that a
transport would not share, and each node keeps its Context (secaggplus_mod's state) across the stages of a
round, as a SuperNode does. Per round, besides the server app's line in times-file, a line
{"round", "server_cpu", "client_cpu", "client_cpu_max", "wall"} goes to times-file + ".inproc": server_cpu
is this process's CPU outside the Grid's calls (Flower's workflow and strategy: configure, sum masked
vectors, rebuild secrets, unmask, aggregate), client_cpu the CPU of all ClientApp calls (copies included)
and client_cpu_max that of the busiest node; measuring bytes is left out of server_cpu.
"""
import argparse
import json
import random
import time
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.task_identity import TaskIdentity

from secaggfl.client_app import app as client_app
from secaggfl.server_app import TimedFedAvg
from secaggfl.server_app import app as server_app

SUPERLINK_NODE_ID = 1


def copy(msg: Message) -> Message:
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(msg).items()}
    out = inflate_object_from_contents(msg.object_id, contents)
    out.metadata.__dict__["_message_id"] = msg.object_id
    return out


class DirectGrid(Grid):
    def __init__(self, nodes: int, run_config: dict[str, Any], seed: int = 0) -> None:
        ids = random.Random(seed).sample(range(2, 2**62), nodes)
        self.contexts = {nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(),
                                      run_config=run_config) for nid in ids}
        self.client_cpu = 0.0
        self.node_cpu = dict.fromkeys(ids, 0.0)
        self._run: Any = SimpleNamespace(run_id=1)

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("the workflows here use send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("the workflows here use send_and_receive")

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for msg in messages:
            start = time.process_time()
            nid = msg.metadata.dst_node_id
            reply = client_app(message=copy(msg), context=self.contexts[nid])
            replies.append(copy(reply))
            spent = time.process_time() - start
            self.client_cpu += spent
            self.node_cpu[nid] += spent
        return replies


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--secagg", action="store_true")
    p.add_argument("--num-shares", default="1.0", help="a fraction of N (with a dot) or a count (default: 1.0)")
    p.add_argument("--reconstruction-threshold", type=int, default=0, help="0: a majority of the shares")
    p.add_argument("--times-file", required=True)
    args = p.parse_args(argv)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 1
    shares = float(args.num_shares) if "." in args.num_shares else int(args.num_shares)
    run_config = {"num-server-rounds": args.rounds, "num-nodes": args.nodes, "secagg": args.secagg,
                  "num-shares": shares, "reconstruction-threshold": args.reconstruction_threshold,
                  "times-file": args.times_file}
    grid = DirectGrid(args.nodes, run_config)
    marks: list[tuple[float, float, float, dict[int, float]]] = []  # wall, process CPU, client CPU, per node

    original = TimedFedAvg.aggregate_fit

    def marked(self: TimedFedAvg, server_round: int, results: Any, failures: Any) -> Any:
        out = original(self, server_round, results, failures)
        marks.append((time.time(), time.process_time() - self.grid.meter_cpu, grid.client_cpu, dict(grid.node_cpu)))
        return out

    TimedFedAvg.aggregate_fit = marked
    context = Context(run_id=1, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(), run_config=run_config)
    marks.append((time.time(), time.process_time(), 0.0, dict(grid.node_cpu)))
    server_app(grid, context)
    with open(args.times_file + ".inproc", "w") as fh:
        for r in range(1, len(marks)):
            (w0, p0, c0, n0), (w1, p1, c1, n1) = marks[r - 1], marks[r]
            fh.write(json.dumps({"round": r, "wall": w1 - w0, "server_cpu": (p1 - p0) - (c1 - c0),
                                 "client_cpu": c1 - c0, "client_cpu_max": max(n1[k] - n0[k] for k in n1)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
