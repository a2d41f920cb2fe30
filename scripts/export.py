#!/usr/bin/env python
"""`darts-tf export` (see `darts-tf export --help`), for a checkout used without the command on PATH."""

import sys

from darts_tf.commands import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
