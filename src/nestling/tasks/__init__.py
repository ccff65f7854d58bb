"""Built-in tasks: the synthetic segmentation demo and a sleep task for benchmarks and tests."""
