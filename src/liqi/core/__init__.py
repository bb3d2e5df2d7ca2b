"""Pure logic of liqi: no network, no subprocess, no filesystem; a clock is passed in."""
