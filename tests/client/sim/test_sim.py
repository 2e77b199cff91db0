"""pfeddc-sim smoke run: a real coordinator and 2 real clients on a tiny model, 1 round, results written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tests_support import GENTLE_RATES, make_image_folder

from pfeddc.client.sim.app import main
from pfeddc.common.spec import SECURE_DEFAULT_METHOD

pytestmark = pytest.mark.integration  # starts real processes


def test_sim_runs_methods_and_writes_results(tmp_path: Path, tiny_model_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    for i in range(2):
        make_image_folder(data / f"client_{i:02d}", ["red", "green"], 6, seed=i, split=True)
    out = tmp_path / "out"
    code = main(["--data", str(data), "--rounds", "1", "--methods", "pfeddc,zeroshot", "--model", str(tiny_model_dir),
                 "--out", str(out), "--threads", "1", *GENTLE_RATES])
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = list(csv.DictReader((out / "per_round.csv").open()))
    assert {(r["method"], r["client"]) for r in rows} == {(m, f"client_{i:02d}") for m in ("pfeddc", "zeroshot")
                                                          for i in range(2)}
    summary = {r["method"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert set(summary) == {"pfeddc", "zeroshot"} and summary["pfeddc"]["clients"] == "2"
    assert 0 <= float(summary["pfeddc"]["worst_client"]) <= float(summary["pfeddc"]["mean_accuracy"]) <= 1
    assert (out / "accuracy.png").stat().st_size > 1000
    results = {r["method"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(results) == {"pfeddc", "zeroshot"}
    moved = results["pfeddc"]["global_change"]["1"]  # from the coordinator's round_completed event
    assert {"head.sums.global", "head.moment.global"} <= set(moved) and all(v >= 0 for v in moved.values())
    assert "round | " in printed and str(out / "accuracy.png") in printed


def test_sim_reports_unknown_methods_and_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path), "--methods", "fedfoo"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["--data", str(tmp_path), "--model", str(tmp_path)]) == 2
    assert "no client folders" in capsys.readouterr().err
    (tmp_path / "results.txt").write_text("not a directory")
    assert main(["--demo", "--out", str(tmp_path / "results.txt")]) == 2
    assert "is a file; give a directory" in capsys.readouterr().err


def test_sim_refuses_to_mix_results_with_an_earlier_run(tmp_path: Path, tiny_model_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    make_image_folder(data / "client_00", ["red", "green"], 4, seed=0)
    (tmp_path / "out" / "pfeddc").mkdir(parents=True)
    assert main(["--data", str(data), "--model", str(tiny_model_dir), "--out", str(tmp_path / "out")]) == 2
    assert "never mixed" in capsys.readouterr().err


def test_sim_runs_a_secure_federation_and_refuses_one_of_two_sites(tmp_path: Path, tiny_model_dir: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    for i in range(3):
        make_image_folder(data / f"client_{i:02d}", ["red", "green"], 6, seed=i, split=True)
    out = tmp_path / "out"
    args = ["--rounds", "1", "--model", str(tiny_model_dir), "--threads", "1", "--secure-aggregation", *GENTLE_RATES]
    assert main(["--data", str(data), "--out", str(out), *args]) == 0, capsys.readouterr().out
    # the class head without its residual, which secure rounds cannot bound per site (common/cli.py default_method)
    assert not (out / "pfeddc").exists()
    summary = json.loads((out / SECURE_DEFAULT_METHOD / "coordinator" / "rounds.jsonl").read_text().splitlines()[-1])
    assert summary["aggregator"] == "secagg-fedavg" and len(summary["clients"]) == 3
    (data / "client_02").rename(tmp_path / "aside")
    assert main(["--data", str(data), "--out", str(tmp_path / "out2"), *args]) == 2
    assert "--secure-aggregation needs 3 client folders or more" in capsys.readouterr().err
    assert not (tmp_path / "out2" / SECURE_DEFAULT_METHOD).exists()  # refused before any process started


def test_round_means_skip_rounds_whose_training_diverged() -> None:
    from pfeddc.client.sim.report import per_round_means

    rows = [{"round": 1, "accuracy_after": 0.5}, {"round": 1, "accuracy_after": None},
            {"round": 2, "accuracy_after": 0.7}]
    assert per_round_means({"rows": rows}) == {1: 0.5, 2: 0.7}
