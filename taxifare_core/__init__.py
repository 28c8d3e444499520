"""taxifare_core: the taxifare contract in pure Python + numpy/pandas (never Beam)."""
