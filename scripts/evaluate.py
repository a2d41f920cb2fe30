#!/usr/bin/env python
"""`darts-tf evaluate` (see `darts-tf evaluate --help`), for a checkout used without the command on PATH."""

import sys

from darts_tf.commands import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
