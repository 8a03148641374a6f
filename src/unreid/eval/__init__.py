"""eval stage of the unreid pipeline."""
