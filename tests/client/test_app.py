"""pfeddc-client's command line: clear errors before connecting, and when the coordinator is unreachable."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_support import make_image_folder

from pfeddc.client.app import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_missing_data_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "--data", str(tmp_path / "nope"), "--server", "127.0.0.1:1", "--state-dir",
                    str(tmp_path / "s"), "--log-format", "json")
    assert code == 2 and "is not a directory" in err and "unreachable" not in err


def test_empty_class_folder_fails_before_connecting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_image_folder(tmp_path / "d", ["a"], 2, seed=0)
    (root / "b").mkdir()
    code, err = run(capsys, "--data", str(root), "--server", "127.0.0.1:1", "--state-dir", str(tmp_path / "s"))
    assert code == 2 and "without images" in err and "unreachable" not in err


def test_changed_class_list_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_image_folder(tmp_path / "d", ["a", "b"], 2, seed=0)
    state = tmp_path / "s"
    state.mkdir()
    (state / "meta.json").write_text('{"classnames": ["a", "c"]}')
    code, err = run(capsys, "--data", str(root), "--server", "127.0.0.1:1", "--state-dir", str(state))
    assert code == 2 and "class list changed" in err


def test_wrong_server_address_gives_up_after_retries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_image_folder(tmp_path / "d", ["a", "b"], 2, seed=0)
    code, err = run(capsys, "--data", str(root), "--server", "127.0.0.1:1", "--state-dir", str(tmp_path / "s"),
                    "--max-retries", "2")
    assert code == 3 and "unreachable after 2 attempts" in err  # ExitCode.UNREACHABLE: a retry may work
    assert "nothing accepts connections at 127.0.0.1:1" in err and "--tls-ca" not in err  # no blaming TLS
    code, err = run(capsys, "--data", str(root), "--server", "no-port-here", "--state-dir", str(tmp_path / "s"))
    assert code == 2 and "HOST:PORT" in err


def test_token_file_unreadable_or_empty_is_a_configuration_error(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = make_image_folder(tmp_path / "d", ["a", "b"], 2, seed=0)
    (tmp_path / "token").write_text("\n")
    for path, message in ((tmp_path / "token", "is empty"), (tmp_path / "none", "cannot read --token-file")):
        code, err = run(capsys, "--data", str(root), "--server", "127.0.0.1:1", "--state-dir", str(tmp_path / "s"),
                        "--token-file", str(path))
        assert code == 2 and message in err and "unreachable" not in err


def test_offline_commands_need_a_trained_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "evaluate", "--state-dir", str(tmp_path / "empty"), "--data", str(tmp_path))
    assert code == 2 and "no trained client state" in err


def test_help_and_argument_errors_answer_without_importing_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, pfeddc.client.app as app\n"
            "assert app.main(['--data', '/nonexistent', '--server', 'grpc://h:1', '--log-format', 'json']) == 2\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported a model library'\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_offline_commands_show_no_progress_bar_without_a_terminal(tmp_path: Path) -> None:
    """`evaluate` / `predict` with stderr a pipe (or JSON logs): transformers' and tqdm's bars are off."""
    import subprocess
    import sys

    script = ("import sys; from pfeddc.client.app import main; "
              f"code = main(['evaluate', '--state-dir', {str(tmp_path / 'none')!r}, '--data', {str(tmp_path)!r}]); "
              "import transformers.utils.logging as hf; import os; "
              "print(code, hf.is_progress_bar_enabled(), os.environ.get('TQDM_DISABLE'))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False", "1"], out.stderr[-2000:]


def test_client_id_comes_from_the_certificate_and_must_agree_with_it(tmp_path: Path) -> None:
    from pfeddc.client.app import client_identity
    from pfeddc.common.tlsprobe import CredentialError
    from pfeddc.server.ops import certs

    assert certs.main(["init", "--out", str(tmp_path / "c")]) == 0
    assert certs.main(["client", "--out", str(tmp_path / "c"), "--client-id", "hospital-a"]) == 0
    cert = tmp_path / "c" / "clients" / "hospital-a" / "client.pem"
    assert client_identity(None, cert)[0] == "hospital-a"
    assert client_identity("hospital-a", cert)[0] == "hospital-a"
    assert client_identity("site-x", None) == ("site-x", "--client-id")
    with pytest.raises(CredentialError, match="differs from the common name 'hospital-a'.*Drop --client-id"):
        client_identity("hospital-b", cert)


def test_signing_key_prints_one_pinnable_line_and_needs_an_id(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """What an operator hands the other sites: {client id: key}, the line their peer_keys.json takes as it is; on a
    state dir without an id (a typo in --state-dir, or before the first run) it asks for --client-id."""
    import json

    state = str(tmp_path / "s")
    code, err = run(capsys, "signing-key", "--state-dir", state)
    assert code == 2 and "pass --client-id" in err and not (tmp_path / "s" / "signing_key.pem").exists()
    assert main(["signing-key", "--state-dir", state, "--client-id", "site-a"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert main(["signing-key", "--state-dir", state]) == 0  # the same key, and the id the state dir keeps
    assert json.loads(capsys.readouterr().out) == line and list(line) == ["site-a"] and len(line["site-a"]) == 66
    assert (tmp_path / "s" / "signing_key.pem").stat().st_mode & 0o777 == 0o600
