"""The always-on path: connection, queue reads, batch handling, the loop."""
