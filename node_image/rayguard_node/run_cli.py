"""`rayguard-node run`: placeholder wiring; the supervisor lands with the runtime."""

from __future__ import annotations

import argparse


def add_run_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pass
