"""2:4 sparse-inference speed: a sparse linear that falls back to dense where sparse loses, and its timers."""
