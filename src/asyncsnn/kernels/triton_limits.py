"""Limits of the Triton kernel, readable without importing Triton."""

#: the largest forward group size ``F`` the Triton kernel sorts in one block (a larger ``F``
#: runs the reference engine, unless the network has fewer population neurons than ``F``,
#: when no group can be larger than the queue anyway)
MAX_GROUP = 4096
