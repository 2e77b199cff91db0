"""pfeddc-partition end to end on an ImageFolder source and on the built-in digit domains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tests_support import fake_fashion_dir, make_image_folder

from pfeddc.client.data import load_client_data
from pfeddc.client.sim.partition_app import main
from pfeddc.client.sim.sources import digits_domains, load_source


def test_partition_of_an_image_folder_writes_clients_manifest_and_heatmap(tmp_path: Path) -> None:
    source = make_image_folder(tmp_path / "src", ["red", "green", "blue"], 20, seed=0)
    out = tmp_path / "out"
    assert main(["--source", str(source), "--clients", "3", "--alpha", "1.0", "--seed", "2", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["samples"] == 60 and (out / "partition.png").stat().st_size > 1000
    total = 0
    for client in manifest["clients"]:
        data, _ = load_client_data(out / client["name"], 8, None)
        assert len(data.train) == client["train"] and len(data.test) == client["test"] > 0
        total += client["train"] + client["test"]
    assert total == 60
    assert main(["--source", str(source), "--clients", "3", "--out", str(out)]) == 2  # refuses a non-empty out


def test_same_seed_gives_identical_client_folders(tmp_path: Path) -> None:
    fashion = fake_fashion_dir(tmp_path / "f")
    source = load_source("fashion-mnist", fashion)
    assert source.classnames[0] == "t-shirt" and len(source) == 200
    listings = []
    for run in ("a", "b"):
        from pfeddc.client.sim.partition_app import build_parser, write_partition

        args = build_parser().parse_args(["--source", "fashion-mnist", "--clients", "4", "--seed", "5",
                                          "--out", str(tmp_path / run)])
        write_partition(source, args)
        listings.append(sorted(str(p.relative_to(tmp_path / run)) for p in (tmp_path / run).rglob("*.png")
                               if p.name != "partition.png"))
    assert listings[0] == listings[1]


def test_digit_domains_are_disjoint_and_visibly_different() -> None:
    src = digits_domains()
    assert src.domains is not None
    assert set(src.domains.tolist()) == {"mnist", "mnist-m", "mnist-inverted", "uci-digits"}
    assert src.images is not None and src.images.shape[1:] == (28, 28, 3) and len(src) == 5000 + 1797
    means = {d: float(src.images[src.domains == d].mean()) for d in ("mnist", "mnist-inverted")}
    assert means["mnist-inverted"] > 2 * means["mnist"]
    colored = src.images[src.domains == "mnist-m"]
    assert float(np.abs(colored[..., 0].astype(int) - colored[..., 2]).mean()) > 5  # not gray
