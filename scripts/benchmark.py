#!/usr/bin/env python
"""`darts-tf benchmark` (see `darts-tf benchmark --help`), for a checkout used without the command on PATH."""

import sys

from darts_tf.commands import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
