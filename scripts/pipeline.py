#!/usr/bin/env python
"""`darts-tf pipeline` (see `darts-tf pipeline --help`), for a checkout used without the command on PATH."""

import sys

from darts_tf.commands import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
