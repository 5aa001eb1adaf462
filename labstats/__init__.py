"""labstats: log every training run to Redis without slowing it; read, compare and share them."""

from labstats.config import LabstatsError
from labstats.logger import Stats
from labstats.reader import Lab, Run, Series, connect

__version__ = "0.1.0"
__all__ = ["Lab", "LabstatsError", "Run", "Series", "Stats", "__version__", "connect", "import_tb"]


def import_tb(logdir, **options):
    """Import TensorBoard event files, one run per run folder (see :mod:`labstats.ops.tbimport`)."""
    from labstats.ops.tbimport import import_tb as run

    return run(logdir, **options)
