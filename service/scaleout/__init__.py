"""Serving a version's parts on Ray Serve (imported only when DOTCOS_RAY_ADDRESS is set)."""
