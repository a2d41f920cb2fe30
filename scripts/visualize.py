#!/usr/bin/env python
"""`darts-tf visualize` (see `darts-tf visualize --help`), for a checkout used without the command on PATH."""

import sys

from darts_tf.commands import main

if __name__ == "__main__":
    sys.exit(main(["visualize", *sys.argv[1:]]))
