"""``python -m tablestore_openmemory_mcp``."""

from tablestore_openmemory_mcp.app.cli import main

if __name__ == "__main__":
    main()
