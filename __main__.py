"""Entry point for `pulumi up`: validate the stack file and catalog, then build the environment."""

from pathlib import Path

from components.platform import run_stack

run_stack(Path(__file__).parent)
