"""Units and defaults every layer shares: the ground floor, importing nothing from mixalign."""

import math

LN2 = math.log(2.0)  # nats per bit: nats / (bytes * LN2) is bits per byte
DEFAULT_SEED = 1337  # one default for every seed a user can set
