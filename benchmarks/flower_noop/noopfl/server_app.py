"""FedAvg over N no-op clients; the time each round's aggregation finishes goes to times-file."""
import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


class TimedFedAvg(FedAvg):
    def __init__(self, times_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.times_file = times_file

    def aggregate_train(self, server_round: int, replies: Any) -> Any:
        out = super().aggregate_train(server_round, replies)
        with open(self.times_file, "a") as fh:
            fh.write(f"{time.time()}\n")
        return out


@app.main()
def main(grid: Grid, context: Context) -> None:
    n = int(context.run_config["num-nodes"])
    arrays = ArrayRecord([np.zeros((16, 512), np.float32), np.zeros((1, 12), np.float32),
                          np.zeros((1, 16, 768), np.float32)])
    strategy = TimedFedAvg(str(context.run_config["times-file"]), fraction_train=1.0, fraction_evaluate=0.0,
                           min_train_nodes=n, min_available_nodes=n)
    strategy.start(grid=grid, initial_arrays=arrays, num_rounds=int(context.run_config["num-server-rounds"]))
