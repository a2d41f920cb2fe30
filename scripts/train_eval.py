#!/usr/bin/env python
"""`darts-tf train` (see `darts-tf train --help`), for a checkout used without the command on PATH."""

import sys

from darts_tf.commands import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
