"""`python -m darts_tf.commands ...` is `darts-tf ...`."""

import sys

from darts_tf.commands import main

sys.exit(main())
