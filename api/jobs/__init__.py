"""Selection jobs: a SQLite job store and a worker process that runs recipes."""
