"""Memory stores: the embedded local store and Tablestore, both behind the seam in ``base``."""
