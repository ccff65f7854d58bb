"""Reading: the tree -> tables, states, summaries, the report."""
