"""What every result names: the code (a snapshot taken at submit), the environment and the data that produced it."""
