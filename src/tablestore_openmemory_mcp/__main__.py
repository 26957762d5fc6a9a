"""``python -m tablestore_openmemory_mcp``."""

from tablestore_openmemory_mcp.cli import main

if __name__ == "__main__":
    main()
