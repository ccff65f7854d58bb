"""Foundation: the formats, names, options and protocols every other room reads."""
