"""`rayguard top`'s command line: what it refuses, in one line with exit status 2, before or
without reaching anything (Redis and Kubernetes paths: tests/integration/test_top.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rayguard_operator.cli import main
from rayguard_operator.top.cli import url_where
from rayguard_operator.top.kube import default_namespace


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["top", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rayguard top: "), err
    return err.strip()


@pytest.mark.parametrize("argv, says", [
    ([], "give a CLUSTER (on Kubernetes) or --redis-url URL"),
    (["demo", "--redis-url", "redis://127.0.0.1:1"], "give CLUSTER or --redis-url, not both"),
    (["demo", "--redis-password-file", "/x"], "--redis-password-file goes with --redis-url"),
    (["--redis-url", "redis://127.0.0.1:1", "-n", "ns"], "-n/--namespace goes with CLUSTER"),
    (["--redis-url", "127.0.0.1:6380"], "bad --redis-url '127.0.0.1:6380': expected redis://HOST:PORT"),
    (["--redis-url", "redis://127.0.0.1:port"], "the port is not a number"),
])
def test_contradictory_or_missing_arguments(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert says in refused(argv, capsys)


@pytest.mark.parametrize("argv", [["--rows", "0"], ["--rows", "x"], ["--interval", "0"], ["--interval", "nan"]])
def test_bad_numbers_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["top", "--redis-url", "redis://127.0.0.1:1", *argv])
    assert exit_.value.code == 2
    assert "argument" in capsys.readouterr().err


def test_a_bad_password_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = ["--redis-url", "redis://127.0.0.1:1"]
    missing = refused([*url, "--redis-password-file", str(tmp_path / "nope")], capsys)
    assert "--redis-password-file" in missing and "No such file" in missing
    (tmp_path / "empty").write_text("\n")
    assert "the file is empty" in refused([*url, "--redis-password-file", str(tmp_path / "empty")], capsys)
    assert "not a regular file" in refused([*url, "--redis-password-file", str(tmp_path)], capsys)


def test_an_unreachable_redis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "pw").write_text("secret\n")
    err = refused(["--redis-url", f"redis://:urlpass@127.0.0.1:{port}/0", "--redis-password-file",
                   str(tmp_path / "pw"), "--once"], capsys)
    assert err.startswith(f"rayguard top: cannot reach Redis at 127.0.0.1:{port}: ")
    assert "secret" not in err and "urlpass" not in err


def test_where_never_shows_a_password() -> None:
    assert url_where("redis://:pw@10.0.0.1:6380/0") == "10.0.0.1:6380"
    assert url_where("redis://redis.example") == "redis.example:6379"
    assert url_where("unix:///run/redis.sock?password=pw") == "/run/redis.sock"


def kubeconfig(path: Path, namespace: str | None) -> Path:
    context = {"cluster": "c", "user": "u", **({"namespace": namespace} if namespace else {})}
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: here\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\nusers: [{name: u, user: {}}]\n"
        f"contexts: [{{name: here, context: {context}}}]\n".replace("'", ""))
    return path


def test_the_namespace_defaults_to_the_kubeconfig_contexts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert default_namespace(str(kubeconfig(tmp_path / "a", "team-a"))) == "team-a"
    assert default_namespace(str(kubeconfig(tmp_path / "b", None))) == "default"
    assert default_namespace(str(tmp_path / "missing")) == "default"


def test_in_a_pod_the_namespace_is_the_pods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "namespace").write_text("jobs\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert default_namespace(str(kubeconfig(tmp_path / "a", "team-a")), tmp_path / "namespace") == "jobs"
