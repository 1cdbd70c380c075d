"""realloop.policies (see ../shared/ARCHITECTURE.md); built in a later issue."""
