"""Between the server's processes: shared memory for tensors, a socket for small messages."""

from repoman.ipc.arena import Arena
from repoman.ipc.connection import Connection, ConnectionLost

__all__ = ["Arena", "Connection", "ConnectionLost"]
