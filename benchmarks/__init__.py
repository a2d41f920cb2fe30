"""darts_tf's speed and memory measurements, outside the library: `measure` (what runs in each
measuring process) and `command` (the tables of `darts-tf benchmark`, which reaches them from a
source checkout; `python -m darts_tf.commands benchmark` is the same)."""
