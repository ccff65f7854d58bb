"""Planning: options + task metadata -> a plan on disk. Pure: no processes."""
