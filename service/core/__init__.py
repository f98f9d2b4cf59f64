"""The service's plain-Python core: loading versions, hot swap, searching. No HTTP here."""
