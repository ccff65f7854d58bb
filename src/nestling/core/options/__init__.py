"""The options of a command: the frozen option groups and the config files they are read from."""
