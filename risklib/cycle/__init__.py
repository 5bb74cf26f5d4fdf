"""The risk cycle: stage functions the Prefect flows wrap as tasks, and the session that wires adapters.

``stages``     one plain function per stage (ingest … record), over Polars frames
``window``     the rolling window of price bars the metrics read
``session``    chooses the feed, broker, warehouse and notifiers in one place
``dashboard``  renders the operator dashboard (pure: frames in, markdown out)
"""
