"""Reports on stored runs: plots (matplotlib), a self-contained HTML page, and exports (CSV, JSON)."""
