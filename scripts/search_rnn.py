#!/usr/bin/env python
"""`darts-tf search-rnn` (see `darts-tf search-rnn --help`), for a checkout used without the command on PATH."""

import sys

from darts_tf.commands import main

if __name__ == "__main__":
    sys.exit(main(["search-rnn", *sys.argv[1:]]))
