"""Developer tools: the demo, the dev server, the embedded PostgreSQL."""
