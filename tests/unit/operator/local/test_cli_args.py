"""`rayguard local up` arguments: options after the file, and a driver after `--`, untouched."""

from __future__ import annotations

from rayguard_operator.cli import build_parser
from rayguard_operator.local.cli import split_driver


def parse(*argv: str):
    rest, driver = split_driver(list(argv))
    args = build_parser().parse_args(rest)
    args.driver = driver
    return args


def test_duration_after_the_file_is_an_option_not_the_driver():
    args = parse("local", "up", "cluster.yaml", "--duration", "60")
    assert args.duration == 60 and args.driver == [] and str(args.file) == "cluster.yaml"


def test_the_driver_is_everything_after_the_first_double_dash():
    args = parse("local", "up", "cluster.yaml", "--keep-logs", "--", "python", "x.py", "--", "--duration", "1")
    assert args.keep_logs and args.duration is None
    assert args.driver == ["python", "x.py", "--", "--duration", "1"]


def test_options_before_the_file_still_work():
    args = parse("local", "up", "--duration", "5", "cluster.yaml", "--", "python", "x.py")
    assert args.duration == 5 and args.driver == ["python", "x.py"]


def test_other_commands_keep_their_double_dash():
    assert split_driver(["operator", "--", "x"]) == (["operator", "--", "x"], [])


def test_the_runtime_is_process_unless_podman_is_asked_for():
    assert parse("local", "up", "cluster.yaml").runtime == "process"
    args = parse("local", "up", "cluster.yaml", "--runtime", "podman", "--", "python", "x.py")
    assert args.runtime == "podman" and args.driver == ["python", "x.py"]
    try:
        parse("local", "up", "cluster.yaml", "--runtime", "docker")
    except SystemExit as exit_:
        assert exit_.code == 2
    else:
        raise AssertionError("--runtime docker was accepted")
