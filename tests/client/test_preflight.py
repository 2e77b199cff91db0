"""Common mistakes fail in milliseconds, before the model loads, with the reason: URLs as --server, a folder of
site folders as --data, files the client's user cannot read (the real PermissionError)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests_support import make_image_folder

from pfeddc.client.app import main
from pfeddc.client.folders import DataError
from pfeddc.client.preflight import check_data, check_model, check_server

NOBODY = 65534


@pytest.mark.parametrize("url", ["grpc://coordinator.example.org:50051", "http://10.0.0.5:50051/",
                                 "https://coordinator.example.org:50051"])
def test_urls_as_server_are_refused_with_the_address_to_use(url: str) -> None:
    with pytest.raises(ValueError) as info:
        check_server(url)
    message = str(info.value)
    assert "not a URL" in message and url.split("://")[1].rstrip("/") in message and "--tls-ca" in message


def test_server_url_fails_before_anything_slow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_image_folder(tmp_path / "d", ["a", "b"], 2, seed=0)
    code = main(["--data", str(data), "--server", "grpc://127.0.0.1:1", "--state-dir", str(tmp_path / "s"),
                 "--log-format", "console"])
    err = capsys.readouterr().err
    assert code == 2 and "not a URL" in err and "unreachable" not in err


def test_folder_of_site_folders_is_refused_with_the_site_to_use(tmp_path: Path) -> None:
    for site in ("site-a", "site-b"):
        make_image_folder(tmp_path / "sites" / site, ["red", "green"], 2, seed=0)
    with pytest.raises(DataError) as info:
        check_data(tmp_path / "sites")
    assert "folder of site folders" in str(info.value) and str(tmp_path / "sites" / "site-a") in str(info.value)
    for site in ("site-a", "site-b"):  # sites with their own train/test split
        make_image_folder(tmp_path / "split-sites" / site, ["red", "green"], 2, seed=0, split=True)
    with pytest.raises(DataError, match="site folders"):
        check_data(tmp_path / "split-sites")
    check_data(tmp_path / "sites" / "site-a")  # one site: fine
    check_data(make_image_folder(tmp_path / "split", ["red", "green"], 2, seed=0, split=True))


def error_as_nobody(check: Callable[[], None]) -> str:
    """The error `check` raises for an unprivileged user (root reads everything: a forked child drops to nobody)."""
    if os.geteuid() != 0:
        try:
            check()
        except Exception as exc:
            return str(exc)
        return ""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no imports needed, they happened in the parent
        message = ""
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            check()
        except Exception as exc:
            message = str(exc)
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder other users can traverse (pytest's own tmp folders are private to their owner)."""
    path = Path(tempfile.mkdtemp(prefix="pfeddc-preflight-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_unreadable_model_file_shows_the_permission_error(shared_tmp: Path) -> None:
    tmp_path = shared_tmp
    model = tmp_path / "models" / "clip"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    os.chmod(model / "model.safetensors", 0o600)  # owned by someone else (root) or unreadable to us
    for parent in (tmp_path, tmp_path / "models", model):
        os.chmod(parent, 0o755)
    if os.geteuid() != 0:
        os.chmod(model / "model.safetensors", 0o000)
    error = error_as_nobody(lambda: check_model(str(model)))
    assert "cannot read" in error and "model.safetensors" in error and "Permission denied" in error
    assert "no CLIP model found" not in error
    check_model("openai/clip-vit-base-patch16")  # hub names are resolved later
    with pytest.raises(DataError, match="no such directory"):
        check_model(str(tmp_path / "missing"))


def test_unreadable_data_folder_shows_the_permission_error(shared_tmp: Path) -> None:
    tmp_path = shared_tmp
    data = make_image_folder(tmp_path / "data", ["red", "green"], 2, seed=0)
    for parent in (tmp_path, data, data / "green"):
        os.chmod(parent, 0o755)
    os.chmod(data / "red", 0o700 if os.geteuid() == 0 else 0o000)
    error = error_as_nobody(lambda: check_data(data))
    assert "cannot read" in error and "Permission denied" in error and str(data / "red") in error
