"""Boards: one folder per board (board.toml, latency.json) and the registry that finds them."""
