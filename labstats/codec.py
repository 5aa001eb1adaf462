"""Transitional: labstats.format.codec under its old name (removed once every module imports it)."""

import sys

from labstats.format import codec

sys.modules[__name__] = codec
