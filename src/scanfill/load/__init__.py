"""The data path: Scan (source) -> decode -> sink (COPY with its cursor), driven by the worker; run orchestrates."""
