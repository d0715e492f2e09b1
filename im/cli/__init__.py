"""``imctl`` command line."""

from im.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
