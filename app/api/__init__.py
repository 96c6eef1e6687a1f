"""The HTTP API (`/api`), health endpoints and error handling."""
