"""Public face of the metrics engine: ``from risklib.metrics import compute_book_metrics``."""

from risklib.core.metrics import *  # noqa: F403
from risklib.core.metrics import __all__  # noqa: F401
