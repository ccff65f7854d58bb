"""The image a worker runs in: options, binds, one class per runtime, the spec every launcher wraps its command with."""
