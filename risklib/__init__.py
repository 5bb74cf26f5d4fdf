"""risklib: the product's logic.

``risklib.core``      pure core: metrics, policy, gate, escalation rules (no I/O, no clock)
``risklib.adapters``  warehouse, notifiers, brokers, feeds, validation: the only code touching the outside
``risklib.api``       FastAPI control plane and webhooks
``risklib.cli``       ``riskctl``
"""

__version__ = "0.1.0"
