"""Numerical constants shared by the network and the losses."""

# The logit (and log-probability) of an entry that must get no mass: a padding column of the
# output head, a token outside the candidates. Finite, so that arithmetic on it (and the
# gradient through a select) stays finite; exp of it underflows to 0 in float32 and float64.
NEG_LOGIT = -1e30
