"""Public entry point of the policy engine (see :mod:`risklib.core.policy`)."""

from risklib.core.policy import *  # noqa: F403
from risklib.core.policy import __all__  # noqa: F401
