"""Commands: what a user calls, from the command line or Python."""
