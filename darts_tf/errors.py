"""The errors darts_tf reports on purpose, under one base.

Everything the library raises because of what it was given (a config field out of range, an
unknown op, a damaged genotype file, missing data, a run folder that cannot be used, a loss
that diverged, a worker that stopped answering) is a `DartsError`, with a one-line message.
Messages name config fields and arguments in backticks (`batch_size`); the `darts-tf`
commands show the matching flag (`--batch-size`) and exit with status 2, and catch nothing
else: any other exception is a bug and keeps its traceback.

The subclasses that are about a value given also derive from ValueError, so
`except ValueError` in a caller's code keeps working.
"""

from __future__ import annotations


class DartsError(Exception):
    """Base of every error darts_tf reports on purpose (one line, naming the thing)."""


class ConfigError(DartsError, ValueError):
    """A config field or an argument outside what it accepts."""


class GenotypeError(DartsError, ValueError):
    """A genotype (a name, a JSON file, its ops and edges) that cannot be used."""


class DataError(DartsError, ValueError):
    """A dataset that cannot be loaded or read: names the cause and the fix."""


class CorpusError(DartsError, ValueError):
    """A text corpus that cannot be read: names the file or the word."""


class RunDirError(DartsError, ValueError):
    """A run folder that cannot be used as asked: names the folder."""


class ExportError(DartsError, ValueError):
    """An export or a saved model that cannot be used as asked: names the path."""


class DistributeError(DartsError, ValueError):
    """A tf.distribute strategy that cannot be set up as asked (names the field or TF_CONFIG)."""


class DivergedError(DartsError, ArithmeticError):
    """A loss became NaN or infinite: the run stopped at once (which loss, when, what to change)."""


class WorkerLostError(DartsError, RuntimeError):
    """A worker of a multi-worker run stopped answering; the run stopped (names the worker)."""
