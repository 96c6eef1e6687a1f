"""Herald core: settings, errors, database, logs, JSON, Redis clients, ids and text checks."""
