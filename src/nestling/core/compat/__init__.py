"""The fences around third-party internals: each module names the versions it was checked against."""
