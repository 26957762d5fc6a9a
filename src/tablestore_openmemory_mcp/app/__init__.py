"""The wiring: the command line, the composition root (bootstrap), the subcommands, startup probes and help."""
