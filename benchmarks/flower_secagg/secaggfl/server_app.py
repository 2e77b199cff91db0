"""FedAvg over N no-op clients on Flower's DefaultWorkflow, its fit stage plain or SecAggPlusWorkflow.

Both modes run the same legacy path (LegacyContext, flwr.server.strategy.FedAvg, DefaultWorkflow): the one
that SecAggPlusWorkflow plugs into, so the two differ by SecAgg+ alone. At the end of each round's
aggregation a JSON line goes to times-file: the time, and the bytes of the messages the ServerApp sent
(down) and received (up) so far, measured as the serialised size of every object of each message (what
Flower 1.42 pushes and pulls: the message, its records and arrays), and the CPU seconds spent measuring them
(to be subtracted from the server's CPU).
"""
import json
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

app = ServerApp()


def message_bytes(msg: Message) -> int:
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(msg).values())


class MeteredGrid(Grid):
    """The run's Grid, counting the bytes of what goes through send_and_receive."""

    def __init__(self, grid: Grid) -> None:
        self.grid, self.down, self.up, self.meter_cpu = grid, 0, 0, 0.0

    def _count(self, messages: Iterable[Message]) -> int:
        start = time.thread_time()
        total = sum(message_bytes(m) for m in messages)
        self.meter_cpu += time.thread_time() - start
        return total

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        self.down += self._count(messages)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self.up += self._count(replies)
        return replies

    def set_run(self, run: Any) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Any:
        return self.grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self.down += self._count(messages)
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.grid.pull_messages(message_ids))
        self.up += self._count(replies)
        return replies


class TimedFedAvg(FedAvg):
    def __init__(self, times_file: str, grid: MeteredGrid, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.times_file, self.grid = times_file, grid

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        out = super().aggregate_fit(server_round, results, failures)
        line = {"round": server_round, "time": time.time(), "down": self.grid.down, "up": self.grid.up,
                "meter_cpu": self.grid.meter_cpu, "results": len(results), "failures": len(failures)}
        with open(self.times_file, "a") as fh:
            fh.write(json.dumps(line) + "\n")
        return out


def threshold(config: dict[str, Any], n: int) -> int:
    """reconstruction-threshold, 0 meaning a majority of each node's share holders: k // 2 + 1, k the shares
    Flower will deal (for a fraction: round(fraction x N), made odd when below N, as SecAggPlusWorkflow does)."""
    if config["reconstruction-threshold"]:
        return int(config["reconstruction-threshold"])
    k = config["num-shares"]
    if isinstance(k, float):
        k = round(k * n)
        k = k + 1 if k < n and k % 2 == 0 else k
    return int(k) // 2 + 1


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    n, rounds = int(config["num-nodes"]), int(config["num-server-rounds"])
    arrays = [np.zeros((16, 512), np.float32), np.zeros((1, 12), np.float32), np.zeros((1, 16, 768), np.float32)]
    metered = MeteredGrid(grid)
    strategy = TimedFedAvg(str(config["times-file"]), metered, fraction_fit=1.0, fraction_evaluate=0.0,
                           min_fit_clients=n, min_evaluate_clients=0, min_available_clients=n,
                           initial_parameters=ndarrays_to_parameters(arrays))
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
    fit = None
    if config.get("secagg", False):
        fit = SecAggPlusWorkflow(num_shares=config["num-shares"], reconstruction_threshold=threshold(config, n))
    DefaultWorkflow(fit_workflow=fit)(metered, legacy)
