"""Board profiles (one folder per board, each with a board.toml); the loader is boards.profile."""
