"""Entry point for `pulumi up`: validate the stack file and catalog, then build the environment."""

from pathlib import Path

import pulumi

from components.platform import build
from stacks.config import load_platform
from stacks.errors import ConfigError

try:
    config = load_platform(pulumi.get_stack(), Path(__file__).parent)
except ConfigError as err:
    # RunError ends the program with this message and no traceback, before any resource exists.
    raise pulumi.RunError(str(err)) from None

build(config)
