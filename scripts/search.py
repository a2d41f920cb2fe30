#!/usr/bin/env python
"""`darts-tf search` (see `darts-tf search --help`), for a checkout used without the command on PATH."""

import sys

from darts_tf.commands import main

if __name__ == "__main__":
    sys.exit(main(["search", *sys.argv[1:]]))
