"""Compute kernels of hearth: float64 oracles (`kernels.reference`) and the
compiled CPU kernels (`kernels.cpu`). Never imports `engine` or `server`."""
