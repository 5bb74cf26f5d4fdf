"""Pure core: functions over Polars/numpy data. No I/O, no clock: time is passed in."""
