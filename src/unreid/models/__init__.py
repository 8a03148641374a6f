"""models stage of the unreid pipeline."""
