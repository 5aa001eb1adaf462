"""labstats: log every training run to Redis without slowing it; read, compare and share them."""

from labstats.config import LabstatsError
from labstats.logger import Stats
from labstats.reader import Lab, Run, Series, connect

__version__ = "0.1.0"
__all__ = ["Lab", "LabstatsError", "Run", "Series", "Stats", "__version__", "connect"]
