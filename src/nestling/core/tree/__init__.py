"""The artifact tree: every path into it, its on-disk formats, and the file protocols on it (attempt locks, array claims, the fail-fast ledger, the supervisor's pid file)."""
