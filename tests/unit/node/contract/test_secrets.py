"""Token and password files: generated private, reused only when they are ours and private,
read without hanging or tracing back."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from rayguard_node.contract.secrets import ensure_secret, read_secret
from rayguard_node.errors import InvalidSetting


def test_generates_a_private_file_and_reuses_it(tmp_path):
    path = tmp_path / "ray" / "rayguard_auth_token"
    value = ensure_secret(path, "Ray auth token")
    assert len(value) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_secret(path, "Ray auth token") == value


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_a_file_others_can_read_or_write_is_not_reused(tmp_path, mode):
    path = tmp_path / "rayguard_auth_token"
    path.write_text("planted")
    path.chmod(mode)
    with pytest.raises(InvalidSetting) as caught:
        ensure_secret(path, "Ray auth token")
    assert "0600" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_a_file_of_another_user_is_not_reused(tmp_path):
    path = tmp_path / "rayguard_redis_password"
    path.write_text("planted")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(InvalidSetting) as caught:
        ensure_secret(path, "Redis password")
    assert "owned by uid 65534" in str(caught.value)


def test_a_symlink_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("planted")
    target.chmod(0o600)
    link = tmp_path / "rayguard_auth_token"
    link.symlink_to(target)
    with pytest.raises(InvalidSetting) as caught:
        ensure_secret(link, "Ray auth token")
    assert "symbolic link" in str(caught.value)
    dangling = tmp_path / "rayguard_redis_password"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidSetting):
        ensure_secret(dangling, "Redis password")
    assert not (tmp_path / "nowhere").exists()


def _in_thread(function, *args):
    outcome = []

    def target():
        try:
            outcome.append(function(*args))
        except BaseException as error:  # noqa: BLE001 (reported to the test)
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "hung on a FIFO"
    return outcome[0]


@pytest.mark.parametrize("function", [read_secret, ensure_secret])
def test_a_fifo_neither_hangs_nor_passes(tmp_path, function):
    path = tmp_path / "token"
    os.mkfifo(path, 0o600)
    assert isinstance(_in_thread(function, path, "Ray auth token"), InvalidSetting)


def test_dev_zero_is_refused():
    assert isinstance(_in_thread(read_secret, "/dev/zero", "token"), InvalidSetting)


@pytest.mark.parametrize("content, why", [(b"\xff\xfe\x00", "UTF-8"), (b"", "empty"),
                                          (b" \n", "empty"), (b"x" * 70000, "too large")])
def test_bad_contents(tmp_path, content, why):
    path = tmp_path / "token"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(InvalidSetting) as caught:
        read_secret(path, "--ray-auth-token-file / RAYGUARD_RAY_AUTH_TOKEN_FILE")
    assert why in str(caught.value) and "\n" not in str(caught.value)


def test_a_given_file_may_be_a_kubernetes_secret(tmp_path):
    """Secret volumes hold root-owned 0644 files behind symlinks: a file named explicitly is
    the user's choice, so only the generated-and-reused files are held to 0600."""
    data = tmp_path / "..data"
    data.mkdir()
    (data / "ray-auth-token").write_text("tok\n")
    (data / "ray-auth-token").chmod(0o644)
    (tmp_path / "ray-auth-token").symlink_to(data / "ray-auth-token")
    assert read_secret(tmp_path / "ray-auth-token", "token") == "tok"
