#!/usr/bin/env python
"""`darts-tf train-rnn` (see `darts-tf train-rnn --help`), for a checkout used without the command on PATH."""

import sys

from darts_tf.commands import main

if __name__ == "__main__":
    sys.exit(main(["train-rnn", *sys.argv[1:]]))
